"""The trading states a client knows, per scope: the risk governor's answer when the client connected
(``GetTradingState``), kept current by its ``state.trading`` events.

The governor is the one publisher of ``state.trading`` and numbers every change with one epoch sequence. Its
events arrive in the order it sent them, so the latest event of a scope is that scope's state. An answer reflects
every change up to its epoch, so it never overrides an event with a newer epoch (one that crossed the answer on
its way); a scope the answer does not list is ACTIVE as of that epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

from bus.messages import TradingStateEvent, TradingStateReply

#: ``state()`` before anything is known
UNKNOWN = "UNKNOWN"
#: most restrictive first
SEVERITY_ORDER = ("HALTED", "REDUCING", "ACTIVE")
GLOBAL_SCOPE = "all"


class TradingStates:
    """Per scope, the change that set its current state (see module docstring). Read from any thread: readers take
    a snapshot of the table, writers replace entries whole."""

    def __init__(self) -> None:
        self._by_scope: dict[str, TradingStateEvent] = {}

    def on_event(self, ev: TradingStateEvent) -> None:
        self._by_scope[ev.scope] = ev

    def on_reply(self, reply: TradingStateReply) -> None:
        listed = {ev.scope: ev for ev in reply.scopes}
        for scope in set(listed) | set(self._by_scope) | {GLOBAL_SCOPE}:
            held = self._by_scope.get(scope)
            if held is not None and held.epoch > reply.epoch:
                continue  # an event newer than the answer
            self._by_scope[scope] = listed.get(scope) or TradingStateEvent(
                scope=scope, state="ACTIVE", epoch=reply.epoch
            )

    def state(self, scopes: Iterable[str]) -> str:
        """The most restrictive state among ``scopes`` (``UNKNOWN`` when none is known)."""
        wanted = set(scopes)
        states = {ev.state for scope, ev in list(self._by_scope.items()) if scope in wanted}
        return next((s for s in SEVERITY_ORDER if s in states), UNKNOWN)

    def of(self, scope: str) -> TradingStateEvent | None:
        return self._by_scope.get(scope)
