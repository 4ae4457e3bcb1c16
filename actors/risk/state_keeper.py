"""The governor's one door to the trading states: every read the checks make and every change (operator, kill,
breaker, lift, the gateway's latch mirrored), persisted by :class:`~actors.risk.trading_state.TradingStates` and
then announced on ``state.trading``.

Nothing else in the governor touches the state table, so a change of who owns the trading state (one authority
for the whole system) is a change of this class alone.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from actors.risk.breakers import ORIGIN_GATEWAY
from actors.risk.ports import Publish
from actors.risk.trading_state import (
    ACTIVE,
    GLOBAL,
    REDUCING,
    Authority,
    Change,
    PersistError,
    ScopeState,
    TradingStates,
    TransitionRefused,
)
from bus import topics
from bus.messages import Ack, Rejected, TradingState, TradingStateEvent

#: ``origin`` of the announcements a restarted governor makes for states persisted without one
RESTART_ORIGIN = "risk"


class TradingStateKeeper:
    """Reads, changes and announces trading states (see module docstring)."""

    def __init__(self, states: TradingStates, publish: Publish) -> None:
        self._states = states
        self._publish = publish

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

    def effective(self, strategy_id: str, symbol: str) -> tuple[TradingState, list[str]]:
        """The most severe state governing an order, and every scope that is not ACTIVE for it."""
        return self._states.effective(strategy_id, symbol)

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

    def apply(self, scope: str, state: str, reason: str, origin: str, authority: Authority) -> Change | None:
        """Change one scope's state (persisted first) and announce it; None when refused or unchanged. Raises
        :class:`PersistError` when a less restrictive state cannot be written."""
        try:
            change = self._states.set(scope, state, reason=reason, origin=origin, authority=authority)
        except TransitionRefused as exc:
            logger.info("risk: {} -> {} by {} not applied: {}", scope, state, origin, exc)
            return None
        if change is None:
            return None
        new = change.new
        log = logger.warning if new.state != ACTIVE else logger.info
        log(
            "risk: trading state {} {} -> {} (epoch {}, by {}): {}",
            scope,
            change.old.state,
            new.state,
            new.epoch,
            origin,
            new.reason or reason,
        )
        self._announce(scope, new, (new.reason or reason)[:500], origin)
        return change

    def operator_set(self, scope: str, state: str, reason: str, origin: str) -> Ack | Rejected:
        """SetTradingState and Resume: an operator may set any state; the answer says whether it is durable."""
        try:
            change = self.apply(scope, state, reason, origin, Authority.OPERATOR)
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

    def lift(self, scope: str, reason: str, origin: str) -> None:
        """A breaker lifts the state it set itself (never anyone else's)."""
        try:
            self.apply(scope, ACTIVE, reason, origin, Authority.LIFT)
        except PersistError as exc:
            logger.error("risk: could not lift {} ({}): {}", scope, origin, exc)

    def mirror_gateway(self, ev: TradingStateEvent) -> None:
        """The gateway's kill latch: refuse here too while it is HALTED; lift only what it set."""
        try:
            if ev.state == ACTIVE:
                self.apply(ev.scope, ACTIVE, ev.reason, ORIGIN_GATEWAY, Authority.LIFT)
            else:
                self.apply(ev.scope, ev.state, f"gateway: {ev.reason}", ORIGIN_GATEWAY, Authority.BREAKER)
        except PersistError as exc:
            logger.error("risk: could not persist the gateway's {} {}: {}", ev.scope, ev.state, exc)

    def disable(self, strategy_id: str, reason: str) -> bool:
        """Disable a strategy (repeated-execution throttle); True if it was enabled before."""
        return self._states.disable(strategy_id, reason)

    def enable(self, strategy_id: str) -> bool:
        """Re-enable a disabled strategy; True if it was disabled. Raises :class:`PersistError`."""
        return self._states.enable(strategy_id)

    def announce_restored(self) -> None:
        """Announce the persisted restrictions at start: a restarted governor is HALTED again before anyone asks
        (an ACTIVE start is not announced: it must not read as a resume to a strategy while the gateway may still
        be halted)."""
        for scope, st in self._states.non_active().items():
            self._announce(scope, st, st.reason or "risk governor restarted", st.origin or RESTART_ORIGIN)
        logger.info(
            "risk: started; global {} (epoch {}), {} scope(s) not ACTIVE, {} strategy(ies) disabled",
            self._states.get(GLOBAL).state,
            self._states.epoch,
            len(self._states.non_active()),
            len(self._states.disabled),
        )

    def _announce(self, scope: str, st: ScopeState, reason: str, origin: str) -> None:
        state: TradingState = st.state
        self._publish(
            topics.TRADING_STATE,
            TradingStateEvent(scope=scope, state=state, epoch=st.epoch, reason=reason, origin=origin),
        )
