"""The halt latch: which scopes are HALTED, with an epoch that only increases.

A scope is ``all`` (everything), ``strategy:<id>``, ``symbol:<symbol>`` (every contract of that symbol) or
``conid:<conId>`` (one contract); :func:`bus.messages.scope_matches` decides what a scope covers. An order is
refused while any
latched scope covers it. Kill latches (epoch + 1), Resume releases (epoch + 1); the caller persists the result
*before* acting on it (see :mod:`actors.gateway.persist`). Cancels are never checked against the latch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from actors.gateway.persist import GatewayState, HaltRecord, PendingSweep
from bus.messages import GLOBAL_SCOPE, TradingState, scope_matches

__all__ = ["GLOBAL_SCOPE", "HaltLatch", "scope_matches"]


@dataclass
class HaltLatch:
    """In-memory view of the latch; :meth:`to_state` gives what to persist."""

    epoch: int = 0
    scopes: dict[str, HaltRecord] = field(default_factory=dict)
    pending: dict[str, PendingSweep] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scopes = dict(self.scopes)  # a copy: the caller's dict is not the latch
        self.pending = dict(self.pending)

    @classmethod
    def from_state(cls, state: GatewayState) -> HaltLatch:
        return cls(
            epoch=state.epoch,
            scopes={h.scope: h for h in state.halted},
            pending={p.command_id: p for p in state.pending},
        )

    def to_state(self) -> GatewayState:
        assert self.scopes is not None and self.pending is not None
        return GatewayState(
            epoch=self.epoch,
            halted=sorted(self.scopes.values(), key=lambda h: h.epoch),
            pending=list(self.pending.values()),
        )

    # -- queries -------------------------------------------------------------------------------------------------

    @property
    def globally_halted(self) -> bool:
        assert self.scopes is not None
        return GLOBAL_SCOPE in self.scopes

    @property
    def global_state(self) -> TradingState:
        return "HALTED" if self.globally_halted else "ACTIVE"

    def halted_scopes(self) -> list[str]:
        assert self.scopes is not None
        return sorted(self.scopes)

    def is_halted(self, scope: str) -> bool:
        """Is ``scope`` itself latched, or everything?"""
        assert self.scopes is not None
        return scope in self.scopes or GLOBAL_SCOPE in self.scopes

    def blocking_scope(self, strategy_id: str, symbol: str, con_id: int = 0) -> str | None:
        """The latched scope that refuses this order, or None."""
        assert self.scopes is not None
        if GLOBAL_SCOPE in self.scopes:
            return GLOBAL_SCOPE
        for scope in self.scopes:
            if scope_matches(scope, strategy_id, symbol, con_id):
                return scope
        return None

    # -- changes -------------------------------------------------------------------------------------------------

    def latch(self, scope: str, *, reason: str, origin: str = "", kill_id: str = "") -> HaltRecord:
        """Halt ``scope`` (a new epoch even when it was already halted: every kill is a new fact)."""
        assert self.scopes is not None
        self.epoch += 1
        record = HaltRecord(
            scope=scope, epoch=self.epoch, reason=reason, origin=origin, kill_id=kill_id, wall_ns=time.time_ns()
        )
        self.scopes[scope] = record
        return record

    def release(self, scope: str) -> list[str]:
        """Resume: ``all`` releases every scope, otherwise only ``scope``. Returns what was released."""
        assert self.scopes is not None
        released = sorted(self.scopes) if scope == GLOBAL_SCOPE else ([scope] if scope in self.scopes else [])
        if released:
            self.epoch += 1
            for s in released:
                del self.scopes[s]
        return released

    def add_pending(self, sweep: PendingSweep) -> None:
        assert self.pending is not None
        self.pending[sweep.command_id] = sweep

    def clear_pending(self, command_id: str) -> bool:
        assert self.pending is not None
        return self.pending.pop(command_id, None) is not None
