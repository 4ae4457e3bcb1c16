"""Request dispatch by table: an actor maps each request type it serves to an async handler ``(ctx, body) -> reply``
and names the types it refuses on purpose; :func:`unhandled_requests` checks that the two together cover every
request type of the schema exactly (tests call it for every service in the registry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, get_args

from bus.messages import Rejected, Request, tag_of
from bus.service import CallContext

#: every request type of the schema (the members of :data:`bus.messages.Request`)
REQUEST_TYPES: frozenset[type] = frozenset(get_args(Request))
#: a request handler: the call's context and the decoded body in, a reply struct out
Handler = Callable[[CallContext, Any], Awaitable[Any]]


class RequestTable:
    """One service's handlers by request type; a type it does not list is answered ``unknown_command``."""

    def __init__(self, owner: str, handlers: Mapping[type, Handler]) -> None:
        self.owner = owner
        self._handlers = dict(handlers)

    async def dispatch(self, ctx: CallContext, body: Any) -> Any:
        handler = self._handlers.get(type(body))
        if handler is None:
            return Rejected(
                code="unknown_command",
                reason=f"{self.owner} does not handle {tag_of(type(body))}",
                request_type=tag_of(type(body)),
            )
        return await handler(ctx, body)


class Dispatching(Protocol):
    """What :func:`unhandled_requests` reads from an actor: its handler table and the types it refuses."""

    refused_requests: ClassVar[frozenset[type]]

    def request_handlers(self) -> Mapping[type, Handler]: ...


def unhandled_requests(actor: Dispatching) -> tuple[set[type], set[type]]:
    """Exhaustiveness of a service's dispatch: (request types neither handled nor refused, types both handled and
    refused). Both are empty for a correct actor; tests call this for every service in the registry."""
    handled = set(actor.request_handlers())
    refused = set(type(actor).refused_requests)
    return set(REQUEST_TYPES) - handled - refused, handled & refused
