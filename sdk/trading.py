"""The trading states a client knows, per scope: the risk governor's answer when the client connected
(``GetTradingState``), kept current by its ``state.trading`` events.

The governor is the one publisher of ``state.trading`` and numbers every change with one epoch sequence. Its
events arrive in the order it sent them, so the latest event of a scope is that scope's state. An answer reflects
every change up to its epoch, so it never overrides an event with a newer epoch (one that crossed the answer on
its way); a scope the answer does not list is ACTIVE as of that epoch.

A client asks when it starts, after subscribing to ``state.trading`` (:class:`ClientTradingState`); while the
governor does not answer, the state is ``UNKNOWN`` until an event or a later answer (it keeps asking every
:data:`STATE_RETRY_S`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from loguru import logger

from bus.messages import GetTradingState, TradingStateEvent, TradingStateReply
from bus.reqrep import RequestTimeout
from sdk.market import MarketSubscriptions
from sdk.session import BusSession

#: Interval between attempts to learn the trading states while the risk governor has not answered.
STATE_RETRY_S = 2.0

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


class TradingStateLearner:
    """Asks the risk governor for every scope's trading state (``GetTradingState``): when the client starts, again
    every :data:`STATE_RETRY_S` while it does not answer, and after a lost ``state.trading`` change."""

    def __init__(
        self,
        states: TradingStates,
        ask: Callable[[int], Awaitable[Any]],
        name: str,
        current: Callable[[], str],
    ) -> None:
        self.states = states
        self._ask = ask
        self.name = name
        self._current = current

    async def learn(self, *, retries: int) -> bool:
        """Ask the governor once; False when it did not answer (ask again later). A refusal is an answer: asking
        again would be refused again (trading states then come from ``state.trading`` events only)."""
        try:
            reply = await self._ask(retries)
        except RequestTimeout:
            logger.warning(
                "sdk: {}: the risk governor did not answer GetTradingState: trading state {} until it does",
                self.name,
                self._current(),
            )
            return False
        if not isinstance(reply, TradingStateReply):
            logger.warning("sdk: {}: GetTradingState answered {}", self.name, reply)
            return True
        self.states.on_reply(reply)
        logger.info(
            "sdk: {}: trading {} (epoch {}{})",
            self.name,
            self._current(),
            reply.epoch,
            "".join(f", {ev.scope} {ev.state} ({ev.cause or '?'} by {ev.origin or '?'})" for ev in reply.scopes),
        )
        return True

    async def keep_asking(self) -> None:
        while not await self.learn(retries=0):
            await asyncio.sleep(STATE_RETRY_S)  # retry timer while the governor does not answer


class ClientTradingState:
    """What one strategy client knows of its trading states: the table (:class:`TradingStates`), the learner and its
    retry task, and the scopes a strategy and a symbol fall under (a collaborator of
    :class:`~sdk.async_client.AsyncKhazadClient`)."""

    def __init__(self, session: BusSession, md: MarketSubscriptions) -> None:
        self.session = session
        self._md = md
        self.states = TradingStates()
        self.learner = TradingStateLearner(
            self.states,
            lambda retries: session.require(session.risk).call(GetTradingState(), retries=retries),
            session.name,
            self.state,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Ask the governor once; while it does not answer, keep asking in the background."""
        if not await self.learner.learn(retries=0):
            self._task = asyncio.create_task(self.learner.keep_asking(), name=f"{self.session.name}.states")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def relearn(self) -> Coroutine[Any, Any, bool]:
        """Ask again (a ``state.trading`` change was lost), with the client's retries."""
        return self.learner.learn(retries=self.session.retries)

    def state(self, symbol: str | None = None) -> str:
        """The most restrictive state of the strategy's scopes (and ``symbol``'s, given one)."""
        scopes = {GLOBAL_SCOPE, f"strategy:{self.session.strategy_id}"}
        if symbol:
            con_id = self._md.resolve(symbol)
            info = self._md.contracts.get(con_id) if con_id is not None else None
            scopes |= {f"symbol:{info.instrument.symbol if info is not None else symbol}"}
            scopes |= {f"conid:{con_id}"} if con_id else set()
        return self.states.state(scopes)

    def of(self, scope: str) -> TradingStateEvent | None:
        return self.states.of(scope)

    async def refresh(self) -> TradingStateReply:
        """Ask the governor now; its answer updates the table."""
        reply = await self.session.call(self.session.risk, GetTradingState(), TradingStateReply)
        self.states.on_reply(reply)
        return reply
