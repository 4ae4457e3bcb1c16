"""Circuit breakers: rules that watch the flow and act without being asked.

Each breaker is pure (clock and inputs injected) and returns :data:`Action` values; the governor carries them out
(trading-state change persisted and published, ``EmergencyCancel`` published *and* sent to the gateway, strategy
disabled). Breakers are edge-triggered: one trip per episode, so a breached limit does not cancel again on every
tick, and an operator's explicit Resume is not overridden while the same episode lasts.

Breaker (trips when) -> action:

- daily loss, account (IB's daily P&L of the account, reqPnL, <= -``daily_loss_limit``) -> HALTED ``all`` + cancel
  ``all``
- daily loss, strategy (the strategy's daily P&L <= -its ``daily_loss_limit``) -> HALTED ``strategy:<id>`` + cancel it
- reject rate (>= ``reject_rate_min_orders`` orders and rejects/orders >= ``reject_rate_max`` in the window)
  -> HALTED ``strategy:<id>`` + cancel it
- repeated executions (``max_fills_per_window`` fills within ``fill_window_s``) -> strategy disabled + cancel it
- stale market data (a contract with working orders had no tick for ``stale_data_s`` of its trading hours) -> new
  orders in it rejected (the check); its resting DAY orders cancelled only with ``stale_data_cancels_resting``
  (never GTC or stop orders)
- gateway disconnected (``state.connection`` DISCONNECTED/STOPPED, or gateway heartbeats stop) -> ``on_disconnect``
  state on ``all``; on READY: cancel ``all`` (``cancel_on_disconnect``), lift (``resume_after_reconnect``)
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.risk.throttles import RejectRate

ORIGIN_DAILY_LOSS = "risk.daily_loss"
ORIGIN_REJECT_RATE = "risk.reject_rate"
ORIGIN_FILL_THROTTLE = "risk.fill_throttle"
ORIGIN_STALE_DATA = "risk.stale_data"
ORIGIN_DISCONNECT = "risk.disconnect"
#: the gateway's halt latch (from its heartbeats), mirrored so that orders are refused here first and the one
#: authority for trading states reports it
ORIGIN_GATEWAY = "gateway"

DOWN_STATES = frozenset({"DISCONNECTED", "STOPPED"})
UP_STATE = "READY"


@dataclass(frozen=True, slots=True)
class Escalate:
    scope: str
    state: str
    reason: str
    origin: str


@dataclass(frozen=True, slots=True)
class Lift:
    scope: str
    reason: str
    origin: str


@dataclass(frozen=True, slots=True)
class Cancel:
    scope: str
    reason: str


@dataclass(frozen=True, slots=True)
class Disable:
    strategy_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Stale:
    """A contract's market data went stale during its trading hours (new orders in it are rejected)."""

    con_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CancelOrders:
    """Cancel these orders, one by one (never a whole scope)."""

    order_refs: tuple[str, ...]
    reason: str


Action = Escalate | Lift | Cancel | Disable | Stale | CancelOrders


class DailyLossBreaker:
    """One latch per scope: trips when the loss reaches the limit, re-arms when P&L is back above it."""

    def __init__(self) -> None:
        self.breached: set[str] = set()
        self.last_pnl: dict[str, float] = {}

    def evaluate(self, scope: str, pnl: float | None, limit: float) -> list[Action]:
        if pnl is None:
            return []
        self.last_pnl[scope] = pnl
        if pnl > -limit:
            self.breached.discard(scope)
            return []
        if scope in self.breached:
            return []
        self.breached.add(scope)
        reason = f"daily loss {-pnl:,.2f} reached daily_loss_limit {limit:,.2f} ({scope})"
        return [Escalate(scope, "HALTED", reason, ORIGIN_DAILY_LOSS), Cancel(scope, reason)]


def reject_rate_actions(strategy_id: str, rr: RejectRate, *, min_orders: int, max_rate: float) -> list[Action]:
    """The reject-rate breaker for one strategy (the caller resets the strategy's window when it trips)."""
    if rr.orders < min_orders or rr.rate < max_rate:
        return []
    scope = f"strategy:{strategy_id}"
    reason = f"reject rate {rr.rate:.0%} ({rr.rejects}/{rr.orders} orders) >= reject_rate_max {max_rate:.0%}"
    return [Escalate(scope, "HALTED", reason, ORIGIN_REJECT_RATE), Cancel(scope, reason)]


def fill_throttle_actions(strategy_id: str, fills_in_window: int, *, max_fills: int, window_s: float) -> list[Action]:
    """The repeated-execution throttle (the caller resets the strategy's window when it trips)."""
    if fills_in_window < max_fills:
        return []
    reason = f"{fills_in_window} fills within {window_s:g}s (max_fills_per_window {max_fills})"
    return [Disable(strategy_id, reason), Cancel(f"strategy:{strategy_id}", reason)]


class StaleDataBreaker:
    """Market data that went quiet during a contract's trading hours, once per quiet spell: new orders in it are
    rejected (by the check); with ``cancel_resting`` its resting DAY orders are cancelled too. GTC and stop orders
    are never cancelled for stale data, and a closed market is never stale (the caller passes only contracts in
    their trading hours, with ages counted from the session's open at the earliest)."""

    def __init__(self, cancel_resting: bool = False) -> None:
        self.cancel_resting = cancel_resting
        self.tripped: set[int] = set()

    def on_fresh_tick(self, con_id: int) -> None:
        self.tripped.discard(con_id)

    def evaluate(
        self,
        ages: dict[int, float],
        stale_s: float,
        *,
        resting: dict[int, list[str]] | None = None,
        names: dict[int, str] | None = None,
    ) -> list[Action]:
        """``ages``: contract in its trading hours with working orders -> seconds without a tick; ``resting``:
        its cancellable (DAY, not stop) orders."""
        out: list[Action] = []
        for con_id, age in sorted(ages.items()):
            if age <= stale_s or con_id in self.tripped:
                continue
            self.tripped.add(con_id)
            name = (names or {}).get(con_id, f"conId {con_id}")
            reason = f"no market data for {name} for {age:.1f}s of its trading hours (stale_data_s {stale_s:g})"
            out.append(Stale(con_id, reason))
            refs = (resting or {}).get(con_id) or []
            if self.cancel_resting and refs:
                out.append(CancelOrders(tuple(sorted(refs)), reason))
        return out


class DisconnectBreaker:
    """The gateway lost IB (or went silent): move to ``on_disconnect``; when it is READY again, cancel what was
    left working while nobody could manage it (``cancel_on_disconnect``) and lift its own state
    (``resume_after_reconnect``)."""

    def __init__(self, on_disconnect: str, cancel_on_disconnect: bool, resume_after_reconnect: bool) -> None:
        self.on_disconnect = on_disconnect
        self.cancel_on_disconnect = cancel_on_disconnect
        self.resume_after_reconnect = resume_after_reconnect
        self.down = False
        self.connection = ""
        self.down_reason = ""
        #: only a READY link can be lost: a gateway that is still starting (DISCONNECTED/CONNECTING before its
        #: first READY) is not a disconnect, and must not cancel the orders resting at IB on every start-up
        self.seen_ready = False

    def on_connection(self, state: str, detail: str = "") -> list[Action]:
        self.connection = state
        if state in DOWN_STATES:
            return self.went_down(f"gateway connection {state}{': ' + detail if detail else ''}")
        if state == UP_STATE:
            return self.came_back()
        return []

    def went_down(self, reason: str) -> list[Action]:
        if self.down or not self.seen_ready:
            return []
        self.down = True
        self.down_reason = reason
        if self.on_disconnect == "none":
            return []
        return [Escalate("all", self.on_disconnect.upper(), reason, ORIGIN_DISCONNECT)]

    def came_back(self) -> list[Action]:
        self.seen_ready = True
        if not self.down:
            return []
        self.down = False
        out: list[Action] = []
        if self.cancel_on_disconnect:
            out.append(Cancel("all", f"cancel on disconnect ({self.down_reason})"))
        if self.resume_after_reconnect and self.on_disconnect != "none":
            out.append(Lift("all", "gateway READY again", ORIGIN_DISCONNECT))
        return out
