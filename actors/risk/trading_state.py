"""Trading states per scope (``all``, ``strategy:<id>``, ``symbol:<symbol>`` every contract of the symbol,
``conid:<conId>`` one contract), who may change them, and their durable copy.

States: ACTIVE (everything the checks allow), REDUCING (only orders that reduce the true exposure), HALTED
(nothing but cancels). An order is governed by the most severe of ``all``, its strategy's and its symbol's state.

Who may move a scope where is an explicit table (:data:`TRANSITIONS`):

* an **operator** (Kill, Resume, SetTradingState) may set any state;
* a **breaker** (an automatic rule, or the gateway's kill latch mirrored) may only make a scope more severe;
* a breaker may **lift** only a state it set itself, and lifting restores what was there before it (an operator's
  REDUCING under a disconnect HALT comes back as REDUCING): an operator's HALT is never lifted by anything but an
  operator.

Every change increments one epoch. The whole table (and the disabled strategies) is persisted as JSON with
write-to-temp, fsync, rename and a directory fsync, before the change is announced, so a HALT survives a crash
or a restart. An unreadable file starts the governor HALTED (fail closed) and keeps the bad file aside.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from loguru import logger

from bus.messages import TradingState, scope_matches

ACTIVE: Final = "ACTIVE"
REDUCING: Final = "REDUCING"
HALTED: Final = "HALTED"
STATES: tuple[TradingState, ...] = (ACTIVE, REDUCING, HALTED)
SEVERITY = {ACTIVE: 0, REDUCING: 1, HALTED: 2}
GLOBAL = "all"
FILE_VERSION = 1
RECOVERY_ORIGIN = "risk.recovery"
RECOVERY_CAUSE = "recovery"


class Authority(StrEnum):
    OPERATOR = "operator"
    BREAKER = "breaker"
    LIFT = "lift"


#: (authority) -> current state -> states it may move to. LIFT additionally requires the same origin.
TRANSITIONS: dict[Authority, dict[str, frozenset[str]]] = {
    Authority.OPERATOR: {s: frozenset(STATES) for s in STATES},
    Authority.BREAKER: {ACTIVE: frozenset({REDUCING, HALTED}), REDUCING: frozenset({HALTED}), HALTED: frozenset()},
    Authority.LIFT: {ACTIVE: frozenset(), REDUCING: frozenset({ACTIVE}), HALTED: frozenset({ACTIVE, REDUCING})},
}


def state_named(value: object) -> TradingState | None:
    """``value`` as a trading state, or None when it is not one of :data:`STATES`."""
    for state in STATES:
        if value == state:
            return state
    return None


def _json_int(value: object) -> int:
    """``int()`` of a parsed JSON value: a number or a numeric string; anything else is a TypeError, as in int()."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


class TransitionRefused(Exception):
    """The change is not allowed for this authority (e.g. a breaker lowering a state)."""


class PersistError(Exception):
    """The state file could not be written."""


@dataclass(frozen=True, slots=True)
class ScopeState:
    state: TradingState
    reason: str = ""
    origin: str = ""
    epoch: int = 0
    wall_ns: int = 0
    #: what a breaker's state covered: restored when that breaker lifts its own state
    prior: ScopeState | None = None
    #: what set it (a :data:`bus.messages.TradingCause`; "" in files written before causes were kept)
    cause: str = ""
    #: the kill that set it (cause ``kill``)
    kill_id: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.reason,
            "origin": self.origin,
            "epoch": self.epoch,
            "wall_ns": self.wall_ns,
            "prior": None if self.prior is None else self.prior.to_json(),
            "cause": self.cause,
            "kill_id": self.kill_id,
        }

    @classmethod
    def from_json(cls, entry: dict[str, object]) -> ScopeState:
        state = state_named(entry["state"])
        if state is None:
            raise ValueError(f"unknown state {entry['state']!r}")
        prior = entry.get("prior")
        return cls(
            state=state,
            reason=str(entry.get("reason", "")),
            origin=str(entry.get("origin", "")),
            epoch=_json_int(entry["epoch"]),
            wall_ns=_json_int(entry.get("wall_ns", 0)),
            prior=cls.from_json(prior) if isinstance(prior, dict) else None,
            cause=str(entry.get("cause", "")),
            kill_id=str(entry.get("kill_id", "")),
        )


@dataclass(frozen=True, slots=True)
class Change:
    scope: str
    old: ScopeState
    new: ScopeState
    persisted: bool


def strategy_scope(strategy_id: str) -> str:
    return f"strategy:{strategy_id}"


def symbol_scope(symbol: str) -> str:
    return f"symbol:{symbol}"


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` so that a crash leaves either the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class TradingStates:
    """The trading-state table plus the strategies disabled by the repeated-execution throttle."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.epoch = 0
        self.scopes: dict[str, ScopeState] = {}
        self.disabled: dict[str, str] = {}  # strategy -> reason
        self.load_error = ""

    # -- persistence ---------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> TradingStates:
        ts = cls(path)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return ts
        except OSError as exc:
            ts._recover(f"state file {path} unreadable: {exc}")
            return ts
        try:
            data = json.loads(raw)
            if data.get("version") != FILE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {FILE_VERSION}")
            ts.epoch = int(data["epoch"])
            for scope, entry in data["scopes"].items():
                ts.scopes[str(scope)] = ScopeState.from_json(entry)
            ts.disabled = {str(k): str(v) for k, v in data.get("disabled", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            ts.scopes.clear()
            ts.disabled.clear()
            ts._recover(f"state file {path} is corrupt ({exc}); kept as {aside.name}")
        return ts

    def _recover(self, why: str) -> None:
        """Fail closed: an unknown previous state means HALTED until an operator looks."""
        logger.critical("risk: {}; starting HALTED", why)
        self.load_error = why
        self.epoch += 1
        self.scopes[GLOBAL] = ScopeState(
            state=HALTED,
            reason=f"recovery: {why}"[:500],
            origin=RECOVERY_ORIGIN,
            epoch=self.epoch,
            wall_ns=time.time_ns(),
            cause=RECOVERY_CAUSE,
        )
        try:
            self.persist()
        except PersistError:
            pass

    def to_json(self) -> dict[str, object]:
        return {
            "version": FILE_VERSION,
            "epoch": self.epoch,
            "scopes": {k: v.to_json() for k, v in self.scopes.items()},
            "disabled": dict(self.disabled),
        }

    def persist(self) -> None:
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, self.to_json())
        except OSError as exc:
            raise PersistError(f"cannot write {self.path}: {exc}") from exc

    # -- queries -------------------------------------------------------------------------------------------------

    def get(self, scope: str) -> ScopeState:
        return self.scopes.get(scope) or ScopeState(state=ACTIVE)

    def effective(self, strategy_id: str, symbol: str, con_id: int = 0) -> tuple[TradingState, list[str]]:
        """The most severe state governing an order (of ``strategy_id`` in the contract ``con_id`` of ``symbol``),
        and every scope that is not ACTIVE for it (:func:`bus.messages.scope_matches` decides what a scope
        covers, as at the gateway)."""
        worst: TradingState = ACTIVE
        scopes: list[str] = []
        for scope, s in self.scopes.items():
            if s.state == ACTIVE or not scope_matches(scope, strategy_id, symbol, con_id):
                continue
            scopes.append(scope)
            if SEVERITY[s.state] > SEVERITY[worst]:
                worst = s.state
        return worst, scopes

    def non_active(self) -> dict[str, ScopeState]:
        return {k: v for k, v in self.scopes.items() if v.state != ACTIVE}

    # -- changes -------------------------------------------------------------------------------------------------

    def set(
        self,
        scope: str,
        state: str,
        *,
        reason: str,
        origin: str,
        authority: Authority,
        cause: str = "",
        kill_id: str = "",
    ) -> Change | None:
        """Apply one change if ``authority`` may make it; None when nothing changes. For :attr:`Authority.LIFT`
        ``state`` is ignored: the scope returns to what the lifting breaker's state covered (with that state's own
        origin and cause). ``cause`` and ``kill_id`` are kept with the new state (see :class:`ScopeState`).

        Escalations are applied even when the file cannot be written (halting is always safe; the failure is
        reported in ``Change.persisted``). Anything less severe is applied only once it is durable, so a restart
        can never come back less restricted than the last acknowledged state."""
        old = self.get(scope)
        if authority is Authority.LIFT:
            if old.state == ACTIVE:
                return None
            if old.origin != origin:
                raise TransitionRefused(
                    f"{scope} {old.state} was set by {old.origin or 'an operator'}, not by {origin}"
                )
            target = old.prior or ScopeState(state=ACTIVE)
            if target.state not in TRANSITIONS[authority][old.state]:
                raise TransitionRefused(f"{origin} may not lift {scope} from {old.state} to {target.state}")
            new = ScopeState(
                state=target.state,
                reason=target.reason,
                origin=target.origin,
                epoch=self.epoch + 1,
                wall_ns=time.time_ns(),
                prior=target.prior,
                cause=target.cause,
                kill_id=target.kill_id,
            )
        else:
            checked = state_named(state)
            if checked is None:
                raise TransitionRefused(f"unknown trading state {state!r}")
            if old.state == state and (authority is not Authority.OPERATOR or state == ACTIVE):
                return None
            if state != old.state and state not in TRANSITIONS[authority][old.state]:
                raise TransitionRefused(f"{authority.value} may not move {scope} from {old.state} to {state}")
            prior = old if authority is Authority.BREAKER and old.state != ACTIVE else None
            new = ScopeState(
                state=checked,
                reason=reason[:500],
                origin=origin,
                epoch=self.epoch + 1,
                wall_ns=time.time_ns(),
                prior=prior,
                cause=cause,
                kill_id=kill_id,
            )
        return self._commit(scope, old, new)

    def _commit(self, scope: str, old: ScopeState, new: ScopeState) -> Change:
        previous_epoch = self.epoch
        self.epoch = new.epoch
        if new.state == ACTIVE:
            self.scopes.pop(scope, None)
        else:
            self.scopes[scope] = new
        try:
            self.persist()
        except PersistError as exc:
            if SEVERITY[new.state] < SEVERITY[old.state]:
                self.epoch = previous_epoch  # never less restricted than what is on disk
                if old.state == ACTIVE:
                    self.scopes.pop(scope, None)
                else:
                    self.scopes[scope] = old
                raise
            logger.critical("risk: {} -> {} applied but not persisted: {}", scope, new.state, exc)
            return Change(scope, old, new, persisted=False)
        return Change(scope, old, new, persisted=True)

    def disable(self, strategy_id: str, reason: str) -> bool:
        """Disable a strategy (repeated-execution throttle); True if it was enabled before."""
        if strategy_id in self.disabled:
            return False
        self.disabled[strategy_id] = reason[:500]
        try:
            self.persist()
        except PersistError as exc:
            logger.critical("risk: strategy {} disabled but not persisted: {}", strategy_id, exc)
        return True

    def enable(self, strategy_id: str) -> bool:
        if strategy_id not in self.disabled:
            return False
        reason = self.disabled.pop(strategy_id)
        try:
            self.persist()
        except PersistError:
            self.disabled[strategy_id] = reason
            raise
        return True
