"""``PublishedLog``: stands in for an actor's :class:`~bus.pubsub.Publisher` in the unit tests of one actor
(monitor, portfolio): keeps what was published, in order."""

from __future__ import annotations

from typing import Any, TypeVar

from bus.messages import Alert

T = TypeVar("T")


class PublishedLog:
    """What an actor published: ``sent`` holds (topic, body) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def publish(self, topic: str, body: Any) -> None:
        self.sent.append((topic, body))

    def of(self, kind: type[T]) -> list[T]:
        return [b for _, b in self.sent if isinstance(b, kind)]

    def alerts(self) -> list[Alert]:
        return self.of(Alert)
