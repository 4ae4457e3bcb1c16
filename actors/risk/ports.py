"""The narrow interfaces the governor's collaborators are given instead of the actor: a publisher, alerts and the
requests they make to the gateway. Each collaborator gets only the ones it uses, so a unit test of one class
passes a recorder or a fake and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from bus import topics
from bus.async_client import AsyncClient
from bus.messages import MAX_TEXT_LENGTH, Alert, Event, Reply, Request, bounded_detail, clip
from bus.retry import RequestTimeout

#: the actor's publisher: ``publish(topic, event)`` (topics from :mod:`bus.topics`)
Publish = Callable[[str, Event], None]
Severity = Literal["info", "warning", "critical"]


class GatewayLink(Protocol):
    """Requests to the gateway. Both calls give None when no answer comes in time (never raise on a timeout)."""

    async def call_once(self, body: Request, timeout_s: float) -> Reply | None:
        """One attempt on a fresh socket, closed (linger 0) afterwards: a gateway that is down gets no backlog of
        stale copies when it comes back (snapshots, probes, emergency cancels)."""

    async def call(self, body: Request, timeout_s: float) -> Reply | None:
        """One attempt on the shared, cached socket (many concurrent calls: market-data subscriptions)."""


class BusGatewayLink:
    """:class:`GatewayLink` over the bus: ``fresh(timeout_s)`` makes a new client whose socket this class closes,
    ``shared(timeout_s)`` returns the actor's cached client for that timeout."""

    def __init__(self, fresh: Callable[[float], AsyncClient], shared: Callable[[float], AsyncClient]) -> None:
        self._fresh = fresh
        self._shared = shared

    async def call_once(self, body: Request, timeout_s: float) -> Reply | None:
        client = self._fresh(timeout_s)
        try:
            reply: Reply = await client.call(body, timeout_s=timeout_s, retries=0)
            return reply
        except RequestTimeout:
            return None
        finally:
            client.close()

    async def call(self, body: Request, timeout_s: float) -> Reply | None:
        try:
            reply: Reply = await self._shared(timeout_s).call(body, timeout_s=timeout_s, retries=0)
            return reply
        except RequestTimeout:
            return None


class AlertSender:
    """Publishes :class:`~bus.messages.Alert` on ``alert.<kind>`` with this actor as the source."""

    def __init__(self, publish: Publish, source: str) -> None:
        self._publish = publish
        self.source = source

    def send(self, kind: str, severity: Severity, message: str, **detail: str) -> None:
        self._publish(
            topics.alert(kind),
            Alert(
                kind=kind,
                severity=severity,
                message=clip(message, MAX_TEXT_LENGTH),
                source=self.source,
                detail=bounded_detail(detail),
            ),
        )
