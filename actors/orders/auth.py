"""Who may act for which strategy: the order manager's one authorisation seam.

The caller's identity is ``CallContext.principal``: the authenticated CURVE key's allow-list entry (see
``bus/allowlist.py`` and ``bus/authz.py``), None when the bus runs with CURVE turned off (then the message's own
``strategy_id`` is trusted). A strategy key may act only for the strategy ids its entry lists and see only their
orders; operators and Khazad's actors may act for any strategy.
"""

from __future__ import annotations

from bus.messages import Rejected
from bus.registry import STRATEGY_ROLE
from bus.service import CallContext


def check_strategy(ctx: CallContext, strategy_id: str, request_type: str) -> Rejected | None:
    """None when the caller may act for ``strategy_id``; otherwise the typed rejection."""
    p = ctx.principal
    if p is None or p.acts_for(strategy_id):
        return None
    return Rejected(
        code="unauthorized", reason=f"{p.id} may not act for strategy {strategy_id!r}", request_type=request_type
    )


def visible_strategies(
    ctx: CallContext, requested: str | None, request_type: str
) -> tuple[str | None, frozenset[str] | None, Rejected | None]:
    """For listings: (the strategy filter to query with, the strategy ids the caller may see or None for all, the
    rejection if it asked for someone else's)."""
    p = ctx.principal
    if p is None or p.role != STRATEGY_ROLE:
        return requested, None, None
    if requested is not None and not p.acts_for(requested):
        return (
            None,
            None,
            Rejected(
                code="unauthorized",
                request_type=request_type,
                reason=f"{p.id} may not list orders of strategy {requested!r}",
            ),
        )
    if requested is None and len(p.strategies) == 1:
        requested = next(iter(p.strategies))
    return requested, p.strategies, None
