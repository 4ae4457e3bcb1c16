"""The governor's one door to the trading states, and the one authority for them in the whole system: every read
the checks make and every change (operator kill, resume and SetTradingState, a breaker, a lift, the gateway's halt
latch mirrored, recovery at start) is persisted by :class:`~actors.risk.trading_state.TradingStates` and then
announced on ``state.trading``, exactly once per change, with the change's epoch, its cause and its origin.
``GetTradingState`` answers with every scope's state (:meth:`TradingStateKeeper.reply`).

The gateway keeps its own halt latch as an interlock (it refuses orders even while this process is down) but
publishes no trading state: the governor mirrors the latch from the gateway's heartbeats
(:meth:`TradingStateKeeper.mirror_gateway_latch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from loguru import logger

from actors.risk.breakers import ORIGIN_GATEWAY
from actors.risk.ports import Publish
from actors.risk.trading_state import (
    ACTIVE,
    GLOBAL,
    HALTED,
    REDUCING,
    Authority,
    Change,
    PersistError,
    ScopeState,
    TradingStates,
    TransitionRefused,
)
from bus import topics
from bus.messages import Ack, Rejected, TradingCause, TradingState, TradingStateEvent, TradingStateReply

#: ``origin`` of the announcements a restarted governor makes for states persisted without one
RESTART_ORIGIN = "risk"
#: the gateway's halt latch holds only HALTED scopes
LATCHED = HALTED


class TradingStateKeeper:
    """Reads, changes and announces trading states (see module docstring)."""

    def __init__(self, states: TradingStates, publish: Publish) -> None:
        self._states = states
        self._publish = publish
        # what was read from disk: announce_restored announces these (and only those still in force: an event the
        # actor processed before its start hook, the gateway's latch at the first heartbeat, announced its change)
        self._restored = dict(states.non_active())

    @classmethod
    def load(cls, path: Path, publish: Publish) -> TradingStateKeeper:
        """The persisted table at ``path`` (an unreadable one starts HALTED: see :attr:`load_error`)."""
        return cls(TradingStates.load(path), publish)

    # -- reads ---------------------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._states.epoch

    @property
    def load_error(self) -> str:
        """Why the persisted table could not be read ("" when it could): the governor then started HALTED."""
        return self._states.load_error

    def state_of(self, scope: str) -> ScopeState:
        return self._states.get(scope)

    def effective(self, strategy_id: str, symbol: str, con_id: int = 0) -> tuple[TradingState, list[str]]:
        """The most severe state governing an order, and every scope that is not ACTIVE for it."""
        return self._states.effective(strategy_id, symbol, con_id)

    def reducing(self, scopes: list[str]) -> tuple[str, ...]:
        """The scopes among ``scopes`` that are REDUCING."""
        return tuple(s for s in scopes if self._states.get(s).state == REDUCING)

    def disabled_reason(self, strategy_id: str) -> str | None:
        return self._states.disabled.get(strategy_id)

    def disabled_strategies(self) -> list[str]:
        return sorted(self._states.disabled)

    def non_active(self) -> dict[str, ScopeState]:
        return self._states.non_active()

    # -- changes -------------------------------------------------------------------------------------------------

    def apply(
        self,
        scope: str,
        state: str,
        reason: str,
        origin: str,
        authority: Authority,
        *,
        cause: TradingCause,
        kill_id: str = "",
    ) -> Change | None:
        """Change one scope's state (persisted first) and announce it once; None when refused or unchanged. Raises
        :class:`PersistError` when a less restrictive state cannot be written."""
        try:
            change = self._states.set(
                scope, state, reason=reason, origin=origin, authority=authority, cause=cause, kill_id=kill_id
            )
        except TransitionRefused as exc:
            logger.info("risk: {} -> {} by {} not applied: {}", scope, state, origin, exc)
            return None
        if change is None:
            return None
        new = change.new
        log = logger.warning if new.state != ACTIVE else logger.info
        log(
            "risk: trading state {} {} -> {} (epoch {}, {} by {}{}): {}",
            scope,
            change.old.state,
            new.state,
            new.epoch,
            cause,
            origin,
            f", kill {kill_id}" if kill_id else "",
            new.reason or reason,
        )
        self._announce(scope, new, (new.reason or reason)[:500], origin, cause, kill_id)
        return change

    def operator_set(
        self, scope: str, state: str, reason: str, origin: str, *, cause: TradingCause = "operator"
    ) -> Ack | Rejected:
        """SetTradingState, Resume (``cause="resume"``) and EnableStrategy: an operator may set any state; the answer
        says whether it is durable."""
        try:
            change = self.apply(scope, state, reason, origin, Authority.OPERATOR, cause=cause)
        except PersistError as exc:
            return Rejected(
                code="persist_failed",
                reason=f"{scope} stays {self._states.get(scope).state}: {exc}",
                request_type="set_trading_state",
            )
        current = self._states.get(scope)
        if change is not None and not change.persisted:
            return Ack(detail=f"{scope} {current.state} (epoch {self._states.epoch}) NOT persisted")
        return Ack(detail=f"{scope} {current.state} (epoch {self._states.epoch})")

    def kill(self, scope: str, kill_id: str, reason: str, origin: str) -> None:
        """An operator's kill: HALTED, named by its kill id."""
        self.apply(
            scope, HALTED, f"kill {kill_id}: {reason}", origin, Authority.OPERATOR, cause="kill", kill_id=kill_id
        )

    def lift(self, scope: str, reason: str, origin: str, *, cause: TradingCause = "breaker") -> None:
        """A breaker lifts the state it set itself (never anyone else's)."""
        try:
            self.apply(scope, ACTIVE, reason, origin, Authority.LIFT, cause=cause)
        except PersistError as exc:
            logger.error("risk: could not lift {} ({}): {}", scope, origin, exc)

    def mirror_gateway_latch(self, latched: frozenset[str], released: frozenset[str], reason: str) -> None:
        """The gateway's halt latch changed (as its heartbeats tell): refuse here too in every scope it latched
        (unless something made that scope HALTED already: then nothing changes and nothing is announced), and lift
        only the states this mirror set itself in the scopes it released (an operator's kill stays until an
        operator resumes it)."""
        for scope in sorted(latched):
            try:
                self.apply(
                    scope, LATCHED, f"gateway: {reason}", ORIGIN_GATEWAY, Authority.BREAKER, cause="gateway_latch"
                )
            except PersistError as exc:  # escalations never raise it; kept for the type checker's sake
                logger.error("risk: could not persist the gateway's latch of {}: {}", scope, exc)
        for scope in sorted(released):
            self.lift(scope, f"gateway: {reason}", ORIGIN_GATEWAY, cause="gateway_latch")

    def held_by_gateway_mirror(self) -> frozenset[str]:
        """Scopes whose current state is the gateway's latch mirrored."""
        return frozenset(k for k, v in self._states.non_active().items() if v.origin == ORIGIN_GATEWAY)

    def disable(self, strategy_id: str, reason: str) -> bool:
        """Disable a strategy (repeated-execution throttle); True if it was enabled before."""
        return self._states.disable(strategy_id, reason)

    def enable(self, strategy_id: str) -> bool:
        """Re-enable a disabled strategy; True if it was disabled. Raises :class:`PersistError`."""
        return self._states.enable(strategy_id)

    def announce_restored(self) -> None:
        """Announce the persisted restrictions at start, each with the epoch, cause and origin of the change that
        set it: a restarted governor is HALTED again before anyone asks (an ACTIVE start is not announced: it must
        not read as a resume to a strategy while the gateway may still be halted)."""
        for scope, st in self._restored.items():
            if self._states.get(scope).epoch != st.epoch:
                continue  # changed since the start, and that change was announced
            self._announce(
                scope,
                st,
                st.reason or "risk governor restarted",
                st.origin or RESTART_ORIGIN,
                _cause(st.cause),
                st.kill_id,
            )
        logger.info(
            "risk: started; global {} (epoch {}), {} scope(s) not ACTIVE, {} strategy(ies) disabled",
            self._states.get(GLOBAL).state,
            self._states.epoch,
            len(self._states.non_active()),
            len(self._states.disabled),
        )

    def reply(self) -> TradingStateReply:
        """``GetTradingState``: every scope that is not ACTIVE as the change that set it, at the current epoch."""
        scopes = [
            self._event(scope, st, st.reason, st.origin, _cause(st.cause), st.kill_id)
            for scope, st in sorted(self._states.non_active().items())
        ]
        global_state: TradingState = self._states.get(GLOBAL).state
        return TradingStateReply(epoch=self._states.epoch, global_state=global_state, scopes=scopes)

    def _announce(
        self, scope: str, st: ScopeState, reason: str, origin: str, cause: TradingCause | None, kill_id: str
    ) -> None:
        self._publish(topics.TRADING_STATE, self._event(scope, st, reason, origin, cause, kill_id))

    @staticmethod
    def _event(
        scope: str, st: ScopeState, reason: str, origin: str, cause: TradingCause | None, kill_id: str
    ) -> TradingStateEvent:
        state: TradingState = st.state
        return TradingStateEvent(
            scope=scope, state=state, epoch=st.epoch, reason=reason[:500], origin=origin, cause=cause, kill_id=kill_id
        )


def _cause(value: str) -> TradingCause | None:
    """A persisted cause as the message's type ("" - a file written before causes were kept - is None)."""
    return value if value in get_args(TradingCause) else None  # type: ignore[return-value]
