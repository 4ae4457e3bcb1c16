"""The asyncio strategy client, :class:`AsyncKhazadClient` (the SDK's core; :mod:`sdk.sync_client` wraps it).

What it talks to (see ``docs/architecture.md``): the order manager (``bus.orders``) for orders, the portfolio
(``bus.portfolio``) for account and positions, the gateway (``bus.gateway``) for instruments and market-data
subscriptions, the risk governor (``bus.risk``: the trading states' one authority) for the current trading states
when it connects, and the event proxy for ``order.<strategy>`` updates, ``md.<conId>`` ticks (each instrument
qualified by the gateway first: :mod:`sdk.market`) and ``state.trading`` changes (topics from :mod:`bus.topics`).

:meth:`AsyncKhazadClient.start` makes the event subscription ready, then asks the governor for the trading states
(a strategy connecting during a halt sees HALTED before its first order). The class holds the public methods and
the lifecycle; collaborators in their own modules do the work: :mod:`sdk.session`, :mod:`sdk.events`,
:mod:`sdk.order_entry`, :mod:`sdk.group_entry`, :mod:`sdk.order_queries`, :mod:`sdk.account_queries`,
:mod:`sdk.market_requests`, :mod:`sdk.trading` and :mod:`sdk.data` (``client.data``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import zmq.asyncio
from loguru import logger

from bus.config import KhazadConfig
from bus.messages import (
    BarEvent,
    ContractInfo,
    GroupView,
    Instrument,
    MarketDataAck,
    OrderGroup,
    OrderSpec,
    OrderUpdate,
    OrderView,
    PortfolioSnapshot,
    Position,
    TickEvent,
    TradingStateEvent,
    TradingStateReply,
)
from bus.pubsub import READY_TIMEOUT_S, Publisher, Subscriber
from bus.reqrep import AsyncClient
from sdk.account_queries import AccountQueries, Service
from sdk.data import DataApi
from sdk.endpoints import Endpoints
from sdk.errors import KhazadClientError
from sdk.events import Callback, EventDispatch
from sdk.group_entry import GroupEntry
from sdk.logs import configure_sdk_logging
from sdk.market import LastTicks, MarketSubscriptions
from sdk.market_requests import MarketDataRequests
from sdk.order_entry import OrderEntry
from sdk.order_queries import MAX_WAIT_S, WAIT_REPLY_MARGIN_S, Filter, OrderQueries, Until
from sdk.session import BusSession
from sdk.streams import AsyncStream
from sdk.trading import ClientTradingState

__all__ = ["AsyncKhazadClient", "Callback", "Filter", "MAX_WAIT_S", "Until", "WAIT_REPLY_MARGIN_S"]


class AsyncKhazadClient:
    """Asyncio strategy client. Use as ``async with AsyncKhazadClient("my_strat", config="khazad.toml") as c:``
    or call :meth:`start` / :meth:`close` yourself.

    ``config`` is a :class:`~bus.config.KhazadConfig`, a path to ``khazad.toml``, or None (``$KHAZAD_CONFIG``,
    ``./khazad.toml``, else defaults). ``endpoints`` overrides the config's endpoints. ``timeout_s``/``retries``
    default to ``bus.request_timeout_s``/``bus.request_retries``. ``log_level`` (default: the config's
    ``[logging] level``, INFO) is the SDK's log level unless the application configured loguru itself
    (:mod:`sdk.logs`). Callbacks registered with ``on_*`` may be plain
    functions (called on the event loop, keep them short) or coroutine functions (scheduled as tasks).
    """

    def __init__(
        self,
        strategy_id: str,
        *,
        config: KhazadConfig | str | os.PathLike[str] | None = None,
        endpoints: Endpoints | None = None,
        name: str | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        log_level: str | None = None,
        conflate_ticks: bool = False,
    ) -> None:
        self.session = s = BusSession(
            strategy_id,
            config=config,
            endpoints=endpoints,
            name=name,
            timeout_s=timeout_s,
            retries=retries,
            ready_timeout_s=ready_timeout_s,
        )
        configure_sdk_logging(log_level or s.cfg.logging.level)
        self.strategy_id = s.strategy_id
        self.cfg = s.cfg
        self.endpoints = s.endpoints
        self.name = s.name
        self.timeout_s = s.timeout_s
        self.retries = s.retries
        self.ready_timeout_s = s.ready_timeout_s
        self.stamper = s.stamper
        self._md = MarketSubscriptions()
        #: the last tick per subscribed contract, by conId, the name it was subscribed with or its readable name
        self.last_ticks = LastTicks(self._md)
        self.trading = ClientTradingState(s, self._md)
        self.events = EventDispatch(
            s,
            self._md,
            self.trading.states,
            on_bar=lambda topic, bar: self.data.on_event(topic, bar),
            on_state_gap=self.trading.relearn,
            conflate_ticks=conflate_ticks,
        )
        self.order_entry = OrderEntry(s)
        self.group_entry = GroupEntry(s)
        self.order_queries = OrderQueries(s)
        self.market_requests = MarketDataRequests(s, self.events, self._md)
        self.account_queries = AccountQueries(s)
        #: history, real-time bars, contract details and search, what-if, daily P&L (:mod:`sdk.data`)
        self.data = DataApi(self.market_requests, lambda bar: self.events.emit("bar", bar))
        self.get_historical_bars = self.data.get_historical_bars
        self.subscribe_bars = self.data.subscribe_bars
        self.unsubscribe_bars = self.data.unsubscribe_bars
        self.get_contract_details = self.data.get_contract_details
        self.search_contracts = self.data.search_contracts
        self.what_if = self.data.what_if
        self.get_pnl = self.data.get_pnl

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.session.started

    @property
    def closed(self) -> bool:
        return self.session.closed

    @property
    def gaps(self) -> int:
        """Events lost on the bus (each gap reported as ``bus.gap.<name>``)."""
        return self.events.gaps

    @property
    def ctx(self) -> zmq.asyncio.Context | None:
        return self.session.ctx

    @property
    def publisher(self) -> Publisher | None:
        return self.session.publisher

    @property
    def subscriber(self) -> Subscriber | None:
        return self.session.subscriber

    async def start(self) -> AsyncKhazadClient:
        """Connect everything and make the event subscription ready (idempotent)."""
        s = self.session
        if s.started:
            return self
        if s.closed:
            raise KhazadClientError("client is closed")
        await s.open(self.events.on_gap)
        self.events.start_reader()
        s.start_heartbeat()
        s.started = True
        await self.trading.start()
        logger.info("sdk: {} connected (orders {}, proxy {})", self.name, s.endpoints.orders, s.endpoints.proxy_backend)
        return self

    async def close(self) -> None:
        """Unsubscribe market data (best effort), stop the reader, close every socket; streams end."""
        s = self.session
        if s.closed:
            return
        s.closed = True
        await self.market_requests.unsubscribe_all()
        await self.events.close()
        await s.stop_heartbeat()
        await self.trading.stop()
        s.say_goodbye()
        await self.events.end()
        s.close_sockets()
        logger.info("sdk: {} closed", self.name)

    async def __aenter__(self) -> AsyncKhazadClient:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- events (sdk/events.py) ----------------------------------------------------------------------------------

    def on_order_update(self, callback: Callable[[OrderUpdate], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` for every :class:`~bus.messages.OrderUpdate` of this strategy.
        Returns a function that unregisters it."""
        return self.events.register("order", callback)

    def on_tick(self, callback: Callable[[TickEvent], Any]) -> Callable[[], None]:
        """Call ``callback(tick)`` for every tick of a subscribed symbol. Returns an unregister function."""
        return self.events.register("tick", callback)

    def on_trading_state(self, callback: Callable[[TradingStateEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` on every ``state.trading`` change (halts, resumes). Returns an unregister
        function."""
        return self.events.register("state", callback)

    def on_bar(self, callback: Callable[[BarEvent], Any]) -> Callable[[], None]:
        """Call ``callback(bar)`` for every bar of a :meth:`subscribe_bars` stream. Returns an unregister function."""
        return self.events.register("bar", callback)

    def order_updates(self, client_order_id: str | None = None) -> AsyncStream[OrderUpdate]:
        """``async for update in client.order_updates():`` every update received from now on (optionally only
        one order's). Create it *before* placing the orders you want to follow."""
        return self.events.order_stream(client_order_id)

    def ticks(self, symbol: str | Instrument | int | None = None) -> AsyncStream[TickEvent]:
        """``async for tick in client.ticks():`` ticks of subscribed contracts (optionally one: the name or
        instrument it was subscribed with, its conId or its readable name) from now on."""
        return self.events.stream("tick", None if symbol is None else (lambda t: self._md.matches(symbol, t)))

    def bars(self, instrument: str | Instrument | int | None = None) -> AsyncStream[BarEvent]:
        """``async for bar in client.bars():`` bars of subscribed streams (optionally one contract's) from now on."""
        pred = None if instrument is None else (lambda b: self.data.bar_matches(instrument, b))
        return self.events.stream("bar", pred)

    def trading_states(self) -> AsyncStream[TradingStateEvent]:
        """``async for event in client.trading_states():`` trading-state changes from now on."""
        return self.events.stream("state", None)

    def trading_state(self, symbol: str | None = None) -> str:
        """The most restrictive trading state for this strategy (global scope, its ``strategy:`` scope and, given
        ``symbol`` (a name of a subscribed contract, or a ticker), that ``symbol:`` scope and its ``conid:`` scope):
        ``HALTED`` > ``REDUCING`` > ``ACTIVE``. Known from the governor's answer when the client connected, kept
        current by ``state.trading``; ``UNKNOWN`` while neither came."""
        return self.trading.state(symbol)

    def trading_state_of(self, scope: str) -> TradingStateEvent | None:
        """The change that set ``scope``'s current state (its epoch, reason, cause and origin); None when not
        known (a scope the governor did not list is ACTIVE once it answered)."""
        return self.trading.of(scope)

    async def refresh_trading_state(self) -> TradingStateReply:
        """Ask the risk governor for every scope's trading state now (``start`` does it once by itself)."""
        return await self.trading.refresh()

    async def ping(self, service: Service = "orders") -> str:
        """Round trip to a service; returns its lifecycle state (raises RequestTimeout when it is down)."""
        return await self.account_queries.ping(service)

    # -- orders (sdk/order_entry.py) -------------------------------------------------------------------------------

    async def place_order(self, order: OrderSpec) -> OrderView:
        """Send one fully specified order (its ``strategy_id`` must be this client's). Returns the order
        manager's view; raises :class:`OrderRejected` when refused (risk, halted, disconnected, bad input)."""
        return await self.order_entry.place_order(order)

    async def place_market_order(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        *,
        client_order_id: str | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
    ) -> OrderView:
        """Market order. ``side`` is ``BUY`` or ``SELL``; ``symbol`` a ticker (US stock, SMART) or an
        :class:`~bus.messages.Instrument`."""
        return await self.order_entry.place(
            symbol, side, quantity, "MKT", client_order_id=client_order_id, tif=tif, outside_rth=outside_rth
        )

    async def place_limit_order(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        limit_price: float,
        *,
        client_order_id: str | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        round_to_tick: bool = False,
    ) -> OrderView:
        """Limit order at ``limit_price``. A price off the contract's tick grid is rejected (``risk.tick_size``,
        with the nearest valid prices) unless ``round_to_tick``: then it goes to IB rounded on the passive side
        (a buy down, a sell up)."""
        return await self.order_entry.place(
            symbol,
            side,
            quantity,
            "LMT",
            client_order_id=client_order_id,
            tif=tif,
            limit_price=limit_price,
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )

    async def place_stop_order(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        stop_price: float,
        *,
        limit_price: float | None = None,
        client_order_id: str | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        round_to_tick: bool = False,
    ) -> OrderView:
        """Stop order triggered at ``stop_price``; a stop-limit when ``limit_price`` is given. A waiting stop
        order is live as ``PreSubmitted``. ``round_to_tick``: as in :meth:`place_limit_order` (a stop rounds away
        from the market)."""
        return await self.order_entry.place(
            symbol,
            side,
            quantity,
            "STP" if limit_price is None else "STP LMT",
            client_order_id=client_order_id,
            tif=tif,
            limit_price=limit_price,
            stop_price=stop_price,
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )

    async def place_trailing_stop(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        *,
        trailing_amount: float | None = None,
        trailing_percent: float | None = None,
        trail_stop_price: float | None = None,
        limit_offset: float | None = None,
        client_order_id: str | None = None,
        tif: str = "GTC",
        outside_rth: bool = False,
    ) -> OrderView:
        """A trailing stop (TRAIL; TRAIL LIMIT with ``limit_offset``) that follows the market by ``trailing_amount``
        or ``trailing_percent`` and lives at IB (GTC by default): protection that outlives this process."""
        return await self.order_entry.place_trailing_stop(
            symbol,
            side,
            quantity,
            trailing_amount=trailing_amount,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            limit_offset=limit_offset,
            client_order_id=client_order_id,
            tif=tif,
            outside_rth=outside_rth,
        )

    async def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> OrderView:
        """Change quantity and/or prices of a working order (risk-checked again)."""
        return await self.order_entry.modify_order(
            client_order_id, quantity=quantity, limit_price=limit_price, stop_price=stop_price
        )

    async def cancel_order(self, client_order_id: str, *, reason: str = "") -> OrderView:
        """Request the cancellation of one order (always allowed, even when halted). Returns the view at the time
        of the request; follow it with :meth:`wait_for_order` (``until="done"``) to see it cancelled."""
        return await self.order_entry.cancel_order(client_order_id, reason=reason)

    async def cancel_all_orders(self, symbol: str | None = None, *, reason: str = "") -> list[OrderView]:
        """Cancel every working order of this strategy (optionally one symbol). Returns the orders the cancel was
        sent for (empty when the order manager only acknowledges)."""
        return await self.order_entry.cancel_all_orders(symbol, reason=reason)

    # -- protective orders and order groups (sdk/group_entry.py; sdk/groups.py builds them) ----------------------

    async def place_group(self, group: OrderGroup) -> GroupView:
        """Place an order group (``sdk.groups.bracket_group``/``oca_group`` build one): approved as a whole or
        refused as a whole (:class:`OrderRejected` with ``group``). Returns every member's view."""
        return await self.group_entry.place_group(group)

    async def place_bracket_order(
        self,
        instrument: str | Instrument,
        side: str,
        quantity: float,
        entry_price: float | None,
        take_profit: float | None,
        stop_loss: float | None,
        *,
        group_id: str | None = None,
        tif: str = "DAY",
        children_tif: str = "GTC",
        outside_rth: bool = False,
        round_to_tick: bool = False,
    ) -> GroupView:
        """Entry (LMT at ``entry_price``, MKT when None), take-profit (LMT) and stop-loss (STP) as one bracket at IB:
        the children work once the entry fills, for what it filled, and one cancels the other."""
        return await self.group_entry.place_bracket_order(
            instrument,
            side,
            quantity,
            entry_price,
            take_profit,
            stop_loss,
            group_id=group_id,
            tif=tif,
            children_tif=children_tif,
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )

    async def place_oca_group(
        self, orders: Sequence[OrderSpec], *, oca_type: int = 1, group_id: str | None = None
    ) -> GroupView:
        """``orders`` as one OCA group at IB: a fill of one cancels (``oca_type=1``) or reduces (2, 3) the others."""
        return await self.group_entry.place_oca_group(orders, oca_type=oca_type, group_id=group_id)

    async def get_group(self, group_id: str) -> GroupView:
        """The order manager's view of one of this strategy's groups (``not_found`` if unknown)."""
        return await self.group_entry.get_group(group_id)

    async def cancel_group(self, group_id: str, *, reason: str = "") -> GroupView:
        """Cancel every working member (IB cancels a bracket's children with its entry); the view at the request."""
        return await self.group_entry.cancel_group(group_id, reason=reason)

    # -- order views and waiting (sdk/order_queries.py) ------------------------------------------------------------

    async def get_order(self, client_order_id: str) -> OrderView:
        """The order manager's current view of one order (raises OrderRejected ``not_found`` if unknown)."""
        return await self.order_queries.get_order(client_order_id)

    async def get_orders(self, filter: Filter = "open", symbol: str | None = None) -> list[OrderView]:
        """This strategy's orders, oldest first: ``open`` (working), ``today`` or ``all``; optionally one symbol.
        Every page of them (one reply holds at most ``MAX_ORDERS_PER_REPLY``; older pages come first here)."""
        return await self.order_queries.get_orders(filter, symbol)

    async def wait_for_order(self, client_order_id: str, until: Until = "live", *, timeout: float = 10.0) -> OrderView:
        """Wait until the order is live at IB (``until="live"``: PreSubmitted/Submitted, or already done) or
        finished (``until="done"``: Filled/Cancelled/rejected) and return its view; ``view.history`` is the whole
        status sequence (PendingSubmit -> PreSubmitted -> Submitted -> Filled ...), what the old system called the
        monitoring result. The order manager does the waiting (``WaitOrder``): no polling.

        Raises :class:`OrderWaitTimeout` (with the last view) if the stage is not reached within ``timeout``
        seconds, :class:`OrderRejected` (``not_found``) for an unknown id, ``RequestTimeout`` if the order manager
        does not answer at all. A rejected or ``Inactive`` order is *returned* (it settled); check
        ``view.status``.
        """
        return await self.order_queries.wait_for_order(client_order_id, until, timeout=timeout)

    # -- portfolio (sdk/account_queries.py), instruments and market data (sdk/market_requests.py) ---------------

    async def get_positions(self, strategy_id: str | None = None) -> list[Position]:
        """Positions from the portfolio: the whole account (None) or one strategy's (pass
        ``client.strategy_id`` for your own)."""
        return await self.account_queries.get_positions(strategy_id)

    async def get_account(self) -> PortfolioSnapshot:
        """Account summary, positions and per-strategy P&L from the portfolio."""
        return await self.account_queries.get_account()

    async def qualify(self, instrument: str | Instrument) -> ContractInfo:
        """IB's contract for an instrument (the gateway asks IB's contract details): its conId, multiplier,
        currency, tick and size rules, trading hours. Raises :class:`OrderRejected` with ``unknown_symbol``,
        ``ambiguous_contract`` (several contracts match: say more) or ``contract_mismatch`` (it contradicts IB)."""
        return await self.market_requests.qualify(instrument)

    async def subscribe_market_data(self, symbol: str | Instrument) -> MarketDataAck:
        """Start receiving the contract's ticks (``md.<conId>``: via :meth:`on_tick` / :meth:`ticks` /
        ``last_ticks``). The instrument is qualified first; the bus subscription is made ready *before* the
        gateway is asked for the stream, so the first ticks are not lost."""
        return await self.market_requests.subscribe(symbol)

    async def unsubscribe_market_data(self, symbol: str | Instrument | int) -> MarketDataAck:
        """Stop receiving ticks of a subscribed contract (by the name it was subscribed with, its conId or its
        readable name) and tell the gateway this subscriber is gone."""
        return await self.market_requests.unsubscribe(symbol)

    def gateway_client(self) -> AsyncClient:
        """The gateway's request client (for :mod:`sdk.data`)."""
        return self.market_requests.gateway_client()

    async def add_topic(self, topic: str) -> None:
        """Subscribe the event socket to ``topic`` and wait until the proxy delivers it (no first event lost)."""
        await self.events.add_topic(topic)

    def drop_topic(self, topic: str) -> None:
        self.events.drop_topic(topic)
