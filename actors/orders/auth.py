"""Who may act for which strategy: the order manager's one authorisation seam.

The caller's identity is ``CallContext.user_id``: the authenticated CURVE key name (``strategy:<id>``,
``operator:<name>``, ``actor:<name>``; see ``bus/authz.py``), empty when the bus runs without CURVE (loopback
only). Then the message's own ``strategy_id`` is trusted. With an identity, a strategy may act only for its own
id and only see its own orders; operators and Khazad's actors may act for any strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.messages import Rejected
from bus.reqrep import CallContext

PRIVILEGED_ROLES = frozenset({"operator", "actor"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller. ``strategy`` is set when the caller is a strategy key (its only allowed id)."""

    user_id: str
    role: str
    strategy: str | None

    @property
    def anonymous(self) -> bool:
        return not self.user_id


def caller_of(ctx: CallContext) -> Caller:
    role, _, name = ctx.user_id.partition(":")
    return Caller(user_id=ctx.user_id, role=role, strategy=name if role == "strategy" and name else None)


def check_strategy(ctx: CallContext, strategy_id: str, request_type: str) -> Rejected | None:
    """None when the caller may act for ``strategy_id``; otherwise the typed rejection."""
    caller = caller_of(ctx)
    if caller.anonymous or caller.role in PRIVILEGED_ROLES:
        return None
    if caller.strategy is not None and caller.strategy == strategy_id:
        return None
    return Rejected(
        code="unauthorized",
        reason=f"{caller.user_id} may not act for strategy {strategy_id!r}",
        request_type=request_type,
    )


def visible_strategy(ctx: CallContext, requested: str | None, request_type: str) -> tuple[str | None, Rejected | None]:
    """For listings: the strategy filter to apply (a strategy caller only ever sees its own orders)."""
    caller = caller_of(ctx)
    if caller.strategy is not None:
        if requested is not None and requested != caller.strategy:
            return None, Rejected(
                code="unauthorized",
                request_type=request_type,
                reason=f"{caller.user_id} may not list orders of strategy {requested!r}",
            )
        return caller.strategy, None
    if caller.anonymous or caller.role in PRIVILEGED_ROLES:
        return requested, None
    return None, Rejected(
        code="unauthorized", reason=f"{caller.user_id} may not list orders", request_type=request_type
    )
