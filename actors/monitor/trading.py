"""The trading states the monitor shows, per ``<source>:<scope>``: the risk governor's (the one authority for
trading states; its epoch is the system's trading epoch) and the gateway's halt latch (an interlock, reported in
its heartbeats; its own counter is not the trading epoch).

:class:`TradingBoard` only keeps the table; the monitor turns each :class:`Update` into metrics, audit rows and
alerts. An update older than the one held (a smaller epoch) is ignored, so a status reply that crossed a newer
event never overwrites it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bus.messages import TradingStateReply

#: most severe wins for the global state
TRADING_SEVERITY = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
GLOBAL_SCOPE = "all"
ACTIVE = "ACTIVE"
HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class Update:
    """One accepted update of one ``source:scope``; ``previous`` is the state held before (None: first seen)."""

    source: str
    scope: str
    state: str
    epoch: int
    previous: str | None
    reason: str = ""
    origin: str = ""

    @property
    def changed(self) -> bool:
        return self.previous != self.state


class TradingBoard:
    """The table (see module docstring). ``authority`` and ``latch_source`` are the two sources' names."""

    def __init__(self, *, authority: str, latch_source: str) -> None:
        self.authority = authority
        self.latch_source = latch_source
        #: "<source>:<scope>" -> (state, epoch)
        self.states: dict[str, tuple[str, int]] = {}
        #: the authority's highest epoch seen
        self.epoch = 0

    def apply(
        self, source: str, scope: str, state: str, epoch: int, *, reason: str = "", origin: str = ""
    ) -> Update | None:
        """Record one state; None when it is older than the one held."""
        key = f"{source}:{scope}"
        held = self.states.get(key)
        if held is not None and epoch < held[1]:
            return None
        self.states[key] = (state, epoch)
        if source == self.authority:
            self.epoch = max(self.epoch, epoch)
        return Update(source, scope, state, epoch, held[0] if held else None, reason, origin)

    def latch(self, latched: frozenset[str], seq: int) -> list[Update]:
        """The gateway's halt latch: every latched scope HALTED, ``all`` ACTIVE when not latched, a scope it no
        longer latches ACTIVE again."""
        held = self._scopes_of(self.latch_source)
        return self._applied(
            self.apply(self.latch_source, scope, HALTED if scope in latched else ACTIVE, seq)
            for scope in sorted(latched | held | {GLOBAL_SCOPE})
        )

    def authority_reply(self, reply: TradingStateReply) -> list[Update]:
        """The governor's ``GetTradingState`` answer, as of its epoch: every scope it lists, and ACTIVE for ``all``
        and every scope held here that it does not list (unless an event newer than the answer said otherwise)."""
        listed = {ev.scope for ev in reply.scopes}
        updates = [
            self.apply(
                self.authority, ev.scope, ev.state, max(ev.epoch, reply.epoch), reason=ev.reason, origin=ev.origin
            )
            for ev in reply.scopes
        ]
        unlisted = sorted((self._scopes_of(self.authority) | {GLOBAL_SCOPE}) - listed)
        updates += [self.apply(self.authority, scope, ACTIVE, reply.epoch) for scope in unlisted]
        return self._applied(updates)

    def global_state(self) -> str:
        """The most severe ``all`` state of any source ("" before any is known)."""
        states = [s for key, (s, _) in self.states.items() if key.endswith(f":{GLOBAL_SCOPE}")]
        return max(states, key=lambda s: TRADING_SEVERITY.get(s, 0)) if states else ""

    def as_dict(self) -> dict[str, str]:
        return {k: v[0] for k, v in sorted(self.states.items())}

    def _scopes_of(self, source: str) -> set[str]:
        prefix = f"{source}:"
        return {k[len(prefix) :] for k in self.states if k.startswith(prefix)}

    @staticmethod
    def _applied(updates: Iterable[Update | None]) -> list[Update]:
        return [u for u in updates if u is not None]
