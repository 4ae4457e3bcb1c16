"""The asyncio strategy client, :class:`AsyncKhazadClient` (the SDK's core; :mod:`sdk.sync_client` wraps it).

What it talks to (see ``docs/architecture.md``): the order manager (``bus.orders``) for orders, the portfolio
(``bus.portfolio``) for account and positions, the gateway (``bus.gateway``) for instruments and market-data
subscriptions, the risk governor (``bus.risk``: the trading states' one authority) for the current trading states
when it connects, and the event proxy for ``order.<strategy>`` updates, ``md.<conId>`` ticks (each instrument
qualified by the gateway first: :mod:`sdk.market`) and ``state.trading`` changes (topics from :mod:`bus.topics`).

Trading state: :meth:`AsyncKhazadClient.start` subscribes to ``state.trading`` first, then asks the governor
(``GetTradingState``), so a strategy that connects during a halt sees HALTED before its first order. An answer
never overrides a change newer than itself (epochs); when the governor does not answer, ``trading_state()`` is
``UNKNOWN`` until an event or a later answer (the client keeps asking every :data:`STATE_RETRY_S`).

Ordering: order updates, ticks and trading-state changes are delivered in arrival order by one reader task.
The event subscription is ready (proxy handshake) before :meth:`AsyncKhazadClient.start` returns, so no update
for an order placed afterwards can be missed; a lost update on the bus is detected by sequence numbers and
reported (``bus.gap.<name>``), never silently ignored.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import zmq
import zmq.asyncio
from loguru import logger

from bus import topics
from bus.async_client import AsyncClient
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.heartbeat import GOODBYE_LINGER_MS
from bus.messages import (
    LEFT_STATE,
    AccountReply,
    Ack,
    BarEvent,
    CancelAllOrders,
    CancelGroup,
    CancelOrder,
    CancelReport,
    ContractInfo,
    GapReport,
    GetAccount,
    GetGroup,
    GetOrder,
    GetPositions,
    GetTradingState,
    GroupReply,
    GroupView,
    Heartbeat,
    Instrument,
    InstrumentReply,
    ListOrders,
    MarketDataAck,
    ModifyOrder,
    OrderGroup,
    OrderListReply,
    OrderReply,
    OrderSpec,
    OrderUpdate,
    OrderView,
    Ping,
    PlaceGroup,
    PlaceOrder,
    Pong,
    PortfolioSnapshot,
    Position,
    PositionsReply,
    QualifyInstrument,
    Rejected,
    SubscribeMarketData,
    TickEvent,
    TradingStateEvent,
    TradingStateReply,
    UnsubscribeMarketData,
    WaitOrder,
    tag_of,
)
from bus.pubsub import READY_TIMEOUT_S, Publisher, Subscriber
from bus.retry import RequestTimeout
from bus.security import Security, client_security
from sdk.conflation import AsyncTickConflator
from sdk.data import DataApi
from sdk.endpoints import Endpoints, resolve_config, validated
from sdk.endpoints import instrument as as_instrument
from sdk.errors import KhazadClientError, OrderRejected, OrderWaitTimeout, UnexpectedReply
from sdk.groups import bracket_group, oca_group, raise_if_group_rejected, trailing_stop_spec
from sdk.ids import new_client_order_id
from sdk.logs import configure_sdk_logging
from sdk.market import LastTicks, MarketSubscriptions
from sdk.streams import CLOSED, AsyncStream
from sdk.trading import TradingStateLearner, TradingStates
from sdk.views import raise_if_rejected

#: Extra time a WaitOrder call gets on top of the wait itself (the order manager answers at its own deadline).
WAIT_REPLY_MARGIN_S = 2.0
#: Longest wait the order manager accepts (WaitOrder.timeout_s is bounded by the schema).
MAX_WAIT_S = 300.0

Filter = Literal["open", "today", "all"]
Until = Literal["live", "done"]
T = TypeVar("T")

Callback = Callable[[Any], Any]


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
        probe = validated(GetOrder(strategy_id=strategy_id, client_order_id="x"))  # validates the strategy id
        self.strategy_id = probe.strategy_id
        self.cfg = resolve_config(config)
        configure_sdk_logging(log_level or self.cfg.logging.level)
        self.endpoints = endpoints or Endpoints.from_bus(self.cfg.bus)
        self.name = name or f"strategy.{strategy_id}"
        self.timeout_s = self.cfg.bus.request_timeout_s if timeout_s is None else timeout_s
        self.retries = self.cfg.bus.request_retries if retries is None else retries
        self.ready_timeout_s = ready_timeout_s
        self.stamper = Stamper(self.name)
        self.ctx: zmq.asyncio.Context | None = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self._orders: AsyncClient | None = None
        self._portfolio: AsyncClient | None = None
        self._gateway: AsyncClient | None = None
        self._risk: AsyncClient | None = None
        self._security: Security | None = None
        self._reader: asyncio.Task[None] | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._state_task: asyncio.Task[None] | None = None
        self._sub_lock: asyncio.Lock | None = None
        self._callbacks: dict[str, list[Callback]] = {"order": [], "tick": [], "state": [], "bar": []}
        self._streams: dict[str, set[Any]] = {"order": set(), "tick": set(), "state": set(), "bar": set()}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._md = MarketSubscriptions()
        #: the last tick per subscribed contract, by conId, the name it was subscribed with or its readable name
        self.last_ticks = LastTicks(self._md)
        self._trading = TradingStates()
        self._learner = TradingStateLearner(
            self._trading,
            lambda retries: self._require(self._risk).call(GetTradingState(), retries=retries),
            self.name,
            self.trading_state,
        )
        self.gaps = 0
        self.started = False
        self.closed = False
        self._goodbye_sent = False
        #: slow consumers: ``on_tick`` callbacks get the newest tick per contract (:mod:`sdk.conflation`)
        self._conflator = AsyncTickConflator(lambda: self._callbacks["tick"]) if conflate_ticks else None
        #: history, real-time bars, contract details and search, what-if, daily P&L (:mod:`sdk.data`)
        self.data = DataApi(self, lambda bar: self._emit("bar", bar))
        self.get_historical_bars = self.data.get_historical_bars
        self.subscribe_bars = self.data.subscribe_bars
        self.unsubscribe_bars = self.data.unsubscribe_bars
        self.get_contract_details = self.data.get_contract_details
        self.search_contracts = self.data.search_contracts
        self.what_if = self.data.what_if
        self.get_pnl = self.data.get_pnl

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> AsyncKhazadClient:
        """Connect everything and make the event subscription ready (idempotent)."""
        if self.started:
            return self
        if self.closed:
            raise KhazadClientError("client is closed")
        ep = self.endpoints
        self.ctx = zmq.asyncio.Context()
        self._sub_lock = asyncio.Lock()
        try:
            self._security = client_security(self.cfg, self.strategy_id)
            self.publisher = Publisher(
                self.ctx, ep.proxy_frontend, self.stamper, security=self._security, server_key=self._server_key("proxy")
            )
            await self.publisher.wait_ready(
                ep.proxy_backend,
                timeout=self.ready_timeout_s,
                security=self._security,
                server_key=self._server_key("proxy"),
            )
            self.subscriber = Subscriber(
                self.ctx,
                ep.proxy_backend,
                [topics.order(self.strategy_id), topics.TRADING_STATE],
                name=self.name,
                on_gap=self._on_gap,
                security=self._security,
                server_key=self._server_key("proxy"),
            )
            await self.subscriber.wait_ready(self.publisher, timeout=self.ready_timeout_s)
            self._orders = self._client(ep.orders, "orders")
            self._portfolio = self._client(ep.portfolio, "portfolio")
            self._gateway = self._client(ep.gateway, "gateway")
            self._risk = self._client(ep.risk or self.cfg.bus.risk, "risk")
        except BaseException:
            self._close_sockets()
            raise
        self._start_reader()
        self._hb_task = asyncio.create_task(self._heartbeat(), name=f"{self.name}.heartbeat")
        self.started = True
        if not await self._learner.learn(retries=0):
            self._state_task = asyncio.create_task(self._learner.keep_asking(), name=f"{self.name}.states")
        logger.info("sdk: {} connected (orders {}, proxy {})", self.name, ep.orders, ep.proxy_backend)
        return self

    async def close(self) -> None:
        """Unsubscribe market data (best effort), stop the reader, close every socket; streams end."""
        if self.closed:
            return
        self.closed = True
        if self.started and self._md.contracts and self._gateway is not None:
            for con_id, info in list(self._md.contracts.items()):
                try:
                    await self._gateway.call(
                        UnsubscribeMarketData(symbol=info.instrument.symbol, con_id=con_id, subscriber=self.name),
                        timeout_s=min(self.timeout_s, 1.0),
                        retries=0,
                    )
                except (RequestTimeout, Exception) as exc:  # best effort on shutdown; the gateway times it out
                    logger.debug("sdk: {} unsubscribe {} on close failed: {!r}", self.name, info.display, exc)
        await self._stop_reader()
        if self._conflator is not None:
            await self._conflator.close()
        for task in (self._hb_task, self._state_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._say_goodbye()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for streams in self._streams.values():
            for stream in list(streams):
                stream.close()
        self._close_sockets()
        logger.info("sdk: {} closed", self.name)

    async def __aenter__(self) -> AsyncKhazadClient:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _server_key(self, service: str) -> bytes | None:
        if self._security is None or not self._security.enabled:
            return None
        return self._security.server_key(service)

    def _client(self, endpoint: str, service: str) -> AsyncClient:
        assert self.ctx is not None
        return AsyncClient(
            self.ctx,
            endpoint,
            service=service,
            stamper=self.stamper,
            timeout_s=self.timeout_s,
            retries=self.retries,
            security=self._security,
            server_key=self._server_key(service),
        )

    def _say_goodbye(self) -> None:
        """The last heartbeat, in state LEFT: the monitor shows this strategy as left, not dead (no alert)."""
        if not self.started or self.publisher is None:
            return
        try:
            self.publisher.publish(
                topics.heartbeat(self.name),
                Heartbeat(
                    actor=self.name,
                    state=LEFT_STATE,
                    pid=os.getpid(),
                    interval_s=self.cfg.bus.heartbeat_interval_s,
                    detail={"role": "strategy", "strategy_id": self.strategy_id},
                ),
            )
            self._goodbye_sent = True
        except zmq.ZMQError as exc:  # best effort: without it the monitor reports a death, the safe side
            logger.warning("sdk: {} goodbye not sent: {}", self.name, exc)

    def _close_sockets(self) -> None:
        for part in (self._orders, self._portfolio, self._gateway, self._risk, self.subscriber):
            if part is not None:
                part.close()
        if self.publisher is not None:
            self.publisher.close(GOODBYE_LINGER_MS if self._goodbye_sent else 0)
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None

    def _require(self, cl: AsyncClient | None) -> AsyncClient:
        if not self.started or self.closed or cl is None:
            raise KhazadClientError("client is not started (use `async with` or await start())")
        return cl

    async def _heartbeat(self) -> None:
        """Publish ``hb.<name>`` like every actor, so the monitor, ``khazad status`` and ``top`` see the strategy."""
        interval = self.cfg.bus.heartbeat_interval_s
        topic = topics.heartbeat(self.name)
        pid = os.getpid()
        while self.publisher is not None and not self.closed:
            self.publisher.publish(
                topic,
                Heartbeat(
                    actor=self.name,
                    state="RUNNING",
                    pid=pid,
                    interval_s=interval,
                    detail={"role": "strategy", "strategy_id": self.strategy_id},
                ),
            )
            await asyncio.sleep(interval)  # periodic timer, not synchronisation

    # -- events --------------------------------------------------------------------------------------------------

    def _start_reader(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}.reader")

    async def _stop_reader(self) -> None:
        # Cancelling a pending recv is lossless in pyzmq (a cancelled future never consumes a message), and the
        # reader has no other await point, so pausing it for a subscription change cannot drop an event.
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def _read(self) -> None:
        assert self.subscriber is not None
        own_orders = topics.order(self.strategy_id)
        while True:
            topic, env = await self.subscriber.recv()
            body = env.body
            if isinstance(body, OrderUpdate):
                if topic == own_orders:  # prefix subscription: order.foo also matches order.foobar
                    self._emit("order", body)
            elif isinstance(body, TickEvent):
                # exact topic: a prefix subscription to md.26 also receives md.265598
                if topic == topics.market_data(body.con_id) and self._md.wants(body.con_id):
                    self._md.ticks[body.con_id] = body
                    if self._conflator is None:
                        self._emit("tick", body)
                    else:  # streams get every tick, callbacks the newest per contract
                        for stream in list(self._streams["tick"]):
                            stream.push(body)
                        self._conflator.put(body)
            elif isinstance(body, TradingStateEvent):
                self._trading.on_event(body)
                self._emit("state", body)
            elif isinstance(body, BarEvent):
                self.data.on_event(topic, body)

    def _emit(self, kind: str, item: Any) -> None:
        for stream in list(self._streams[kind]):
            stream.push(item)
        for cb in list(self._callbacks[kind]):
            try:
                result = cb(item)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(self._guard(cb, result))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception as exc:  # a strategy bug must not stop the reader (that would lose every update)
                logger.opt(exception=exc).error(
                    "sdk: {} callback {!r} failed on {}: {}", kind, cb, tag_of(type(item)), exc
                )

    async def _guard(self, cb: Callback, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # see _emit
            logger.opt(exception=exc).error("sdk: async callback {!r} failed: {}", cb, exc)

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        self.gaps += 1
        if topic == topics.TRADING_STATE and self.started and not self.closed:
            # a trading-state change was lost: ask the governor for the whole picture again
            task = asyncio.ensure_future(self._learner.learn(retries=self.retries))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.publisher is not None:
            self.publisher.publish(
                topics.gap(self.name),
                GapReport(
                    subscriber=self.name,
                    publisher=sender,
                    topic=topic,
                    expected=expected,
                    received=received,
                    missed=received - expected,
                ),
            )

    def on_order_update(self, callback: Callable[[OrderUpdate], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` for every :class:`~bus.messages.OrderUpdate` of this strategy.
        Returns a function that unregisters it."""
        return self._register("order", callback)

    def on_tick(self, callback: Callable[[TickEvent], Any]) -> Callable[[], None]:
        """Call ``callback(tick)`` for every tick of a subscribed symbol. Returns an unregister function."""
        return self._register("tick", callback)

    def on_trading_state(self, callback: Callable[[TradingStateEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` on every ``state.trading`` change (halts, resumes). Returns an unregister
        function."""
        return self._register("state", callback)

    def _register(self, kind: str, callback: Callback) -> Callable[[], None]:
        self._callbacks[kind].append(callback)

        def unregister() -> None:
            if callback in self._callbacks[kind]:
                self._callbacks[kind].remove(callback)

        return unregister

    def order_updates(self, client_order_id: str | None = None) -> AsyncStream[OrderUpdate]:
        """``async for update in client.order_updates():`` every update received from now on (optionally only
        one order's). Create it *before* placing the orders you want to follow."""
        pred = None if client_order_id is None else (lambda u: u.order.spec.client_order_id == client_order_id)
        return self._stream("order", pred)

    def ticks(self, symbol: str | Instrument | int | None = None) -> AsyncStream[TickEvent]:
        """``async for tick in client.ticks():`` ticks of subscribed contracts (optionally one: the name or
        instrument it was subscribed with, its conId or its readable name) from now on."""
        return self._stream("tick", None if symbol is None else (lambda t: self._md.matches(symbol, t)))

    def on_bar(self, callback: Callable[[BarEvent], Any]) -> Callable[[], None]:
        """Call ``callback(bar)`` for every bar of a :meth:`subscribe_bars` stream. Returns an unregister function."""
        return self._register("bar", callback)

    def bars(self, instrument: str | Instrument | int | None = None) -> AsyncStream[BarEvent]:
        """``async for bar in client.bars():`` bars of subscribed streams (optionally one contract's) from now on."""
        return self._stream("bar", None if instrument is None else (lambda b: self.data.bar_matches(instrument, b)))

    def trading_states(self) -> AsyncStream[TradingStateEvent]:
        """``async for event in client.trading_states():`` trading-state changes from now on."""
        return self._stream("state", None)

    def _stream(self, kind: str, pred: Callable[[Any], bool] | None) -> AsyncStream[Any]:
        stream: AsyncStream[Any] = AsyncStream(self._streams[kind].discard, kind, pred)
        if self.closed:
            stream.push(CLOSED)
        else:
            self._streams[kind].add(stream)
        return stream

    def trading_state(self, symbol: str | None = None) -> str:
        """The most restrictive trading state for this strategy (global scope, its ``strategy:`` scope and, given
        ``symbol`` (a name of a subscribed contract, or a ticker), that ``symbol:`` scope and its ``conid:`` scope):
        ``HALTED`` > ``REDUCING`` > ``ACTIVE``. Known from the governor's answer when the client connected, kept
        current by ``state.trading``; ``UNKNOWN`` while neither came."""
        scopes = {"all", f"strategy:{self.strategy_id}"}
        if symbol:
            con_id = self._md.resolve(symbol)
            info = self._md.contracts.get(con_id) if con_id is not None else None
            scopes |= {f"symbol:{info.instrument.symbol if info is not None else symbol}"}
            scopes |= {f"conid:{con_id}"} if con_id else set()
        return self._trading.state(scopes)

    def trading_state_of(self, scope: str) -> TradingStateEvent | None:
        """The change that set ``scope``'s current state (its epoch, reason, cause and origin); None when not
        known (a scope the governor did not list is ACTIVE once it answered)."""
        return self._trading.of(scope)

    async def refresh_trading_state(self) -> TradingStateReply:
        """Ask the risk governor for every scope's trading state now (``start`` does it once by itself)."""
        reply = await self._call(self._risk, GetTradingState(), TradingStateReply)
        self._trading.on_reply(reply)
        return reply

    # -- requests ------------------------------------------------------------------------------------------------

    async def _call(
        self,
        cl: AsyncClient | None,
        body: Any,
        expect: type[T] | tuple[type[T], ...],
        *,
        timeout_s: float | None = None,
    ) -> T:
        reply = await self._require(cl).call(body, timeout_s=timeout_s)
        if isinstance(reply, Rejected):
            raise OrderRejected(reply.code, reply.reason, request_type=reply.request_type or tag_of(type(body)))
        if not isinstance(reply, expect):
            raise UnexpectedReply(f"{tag_of(type(body))}: unexpected reply {tag_of(type(reply))}")
        return reply

    async def ping(self, service: Literal["orders", "portfolio", "gateway"] = "orders") -> str:
        """Round trip to a service; returns its lifecycle state (raises RequestTimeout when it is down)."""
        cl = {"orders": self._orders, "portfolio": self._portfolio, "gateway": self._gateway}[service]
        reply = await self._call(cl, Ping(), Pong)
        return reply.state

    async def place_order(self, order: OrderSpec) -> OrderView:
        """Send one fully specified order (its ``strategy_id`` must be this client's). Returns the order
        manager's view; raises :class:`OrderRejected` when refused (risk, halted, disconnected, bad input)."""
        if order.strategy_id != self.strategy_id:
            raise ValueError(f"order is for strategy {order.strategy_id!r}, this client is {self.strategy_id!r}")
        order = validated(order)
        reply = await self._call(self._orders, PlaceOrder(order=order), OrderReply)
        view = reply.order
        if reply.duplicate:
            logger.info("sdk: order {} already known (idempotent resend), status {}", order.order_ref, view.status)
        else:
            logger.debug(
                "sdk: placed {} {} {:g} {} ({}): {}",
                order.order_ref,
                order.side,
                order.quantity,
                order.instrument.symbol,
                order.order_type,
                view.status,
            )
        raise_if_rejected(view)
        return view

    def _spec(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        order_type: str,
        *,
        client_order_id: str | None,
        tif: str,
        limit_price: float | None = None,
        stop_price: float | None = None,
        outside_rth: bool = False,
        round_to_tick: bool = False,
    ) -> OrderSpec:
        # side, order_type and tif are the caller's strings (the ignores below): place_order() validates the spec
        # against the Literal types before anything is sent, and a bad one raises there naming the field
        return OrderSpec(
            strategy_id=self.strategy_id,
            client_order_id=client_order_id or new_client_order_id(self.strategy_id),
            instrument=as_instrument(symbol),
            side=side.upper(),  # type: ignore[arg-type]
            quantity=quantity,
            order_type=order_type,  # type: ignore[arg-type]
            limit_price=limit_price,
            stop_price=stop_price,
            tif=tif,  # type: ignore[arg-type]
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )

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
        return await self.place_order(
            self._spec(symbol, side, quantity, "MKT", client_order_id=client_order_id, tif=tif, outside_rth=outside_rth)
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
        return await self.place_order(
            self._spec(
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
        order_type = "STP" if limit_price is None else "STP LMT"
        return await self.place_order(
            self._spec(
                symbol,
                side,
                quantity,
                order_type,
                client_order_id=client_order_id,
                tif=tif,
                limit_price=limit_price,
                stop_price=stop_price,
                outside_rth=outside_rth,
                round_to_tick=round_to_tick,
            )
        )

    # -- protective orders and order groups (sdk/groups.py builds them) -------------------------------------------

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
        spec = trailing_stop_spec(
            self.strategy_id,
            as_instrument(symbol),
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
        return await self.place_order(spec)

    async def place_group(self, group: OrderGroup) -> GroupView:
        """Place an order group (``sdk.groups.bracket_group``/``oca_group`` build one): approved as a whole or
        refused as a whole (:class:`OrderRejected` with ``group``). Returns every member's view."""
        if group.strategy_id != self.strategy_id:
            raise ValueError(f"group is for strategy {group.strategy_id!r}, this client is {self.strategy_id!r}")
        reply = await self._call(self._orders, PlaceGroup(group=validated(group)), GroupReply)
        view = reply.group
        logger.debug("sdk: group {} ({}) placed: {}", group.key, group.kind, view.status)
        raise_if_group_rejected(view)
        return view

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
        group = bracket_group(
            self.strategy_id,
            as_instrument(instrument),
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
        return await self.place_group(group)

    async def place_oca_group(
        self, orders: Sequence[OrderSpec], *, oca_type: int = 1, group_id: str | None = None
    ) -> GroupView:
        """``orders`` as one OCA group at IB: a fill of one cancels (``oca_type=1``) or reduces (2, 3) the others."""
        return await self.place_group(oca_group(self.strategy_id, orders, oca_type=oca_type, group_id=group_id))

    async def get_group(self, group_id: str) -> GroupView:
        """The order manager's view of one of this strategy's groups (``not_found`` if unknown)."""
        body = validated(GetGroup(strategy_id=self.strategy_id, group_id=group_id))
        return (await self._call(self._orders, body, GroupReply)).group

    async def cancel_group(self, group_id: str, *, reason: str = "") -> GroupView:
        """Cancel every working member (IB cancels a bracket's children with its entry); the view at the request."""
        body = validated(CancelGroup(strategy_id=self.strategy_id, group_id=group_id, reason=reason))
        return (await self._call(self._orders, body, GroupReply)).group

    async def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> OrderView:
        """Change quantity and/or prices of a working order (risk-checked again)."""
        body = validated(
            ModifyOrder(
                strategy_id=self.strategy_id,
                client_order_id=client_order_id,
                quantity=quantity,
                limit_price=limit_price,
                stop_price=stop_price,
            )
        )
        reply = await self._call(self._orders, body, OrderReply)
        return reply.order

    async def cancel_order(self, client_order_id: str, *, reason: str = "") -> OrderView:
        """Request the cancellation of one order (always allowed, even when halted). Returns the view at the time
        of the request; follow it with :meth:`wait_for_order` (``until="done"``) to see it cancelled."""
        body = validated(CancelOrder(strategy_id=self.strategy_id, client_order_id=client_order_id, reason=reason))
        reply = await self._call(self._orders, body, OrderReply)
        return reply.order

    async def cancel_all_orders(self, symbol: str | None = None, *, reason: str = "") -> list[OrderView]:
        """Cancel every working order of this strategy (optionally one symbol). Returns the orders the cancel was
        sent for (empty when the order manager only acknowledges)."""
        body = validated(CancelAllOrders(strategy_id=self.strategy_id, symbol=symbol, reason=reason))
        reply = await self._call(self._orders, body, (OrderListReply, Ack, CancelReport))
        return list(reply.orders) if isinstance(reply, OrderListReply) else []

    async def get_order(self, client_order_id: str) -> OrderView:
        """The order manager's current view of one order (raises OrderRejected ``not_found`` if unknown)."""
        body = validated(GetOrder(strategy_id=self.strategy_id, client_order_id=client_order_id))
        reply = await self._call(self._orders, body, OrderReply)
        return reply.order

    async def get_orders(self, filter: Filter = "open", symbol: str | None = None) -> list[OrderView]:
        """This strategy's orders, oldest first: ``open`` (working), ``today`` or ``all``; optionally one symbol.
        Every page of them (one reply holds at most ``MAX_ORDERS_PER_REPLY``; older pages come first here)."""
        pages: list[list[OrderView]] = []
        offset = 0
        while True:
            body = validated(ListOrders(strategy_id=self.strategy_id, symbol=symbol, filter=filter, offset=offset))
            reply = await self._call(self._orders, body, OrderListReply)
            pages.append(list(reply.orders))
            offset += len(reply.orders)
            if not reply.more or not reply.orders:
                break
        return [view for page in reversed(pages) for view in page]

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
        if not 0 < timeout <= MAX_WAIT_S:
            raise ValueError(f"timeout must be > 0 and <= {MAX_WAIT_S:g}s, got {timeout!r}")
        body = validated(
            WaitOrder(strategy_id=self.strategy_id, client_order_id=client_order_id, until=until, timeout_s=timeout)
        )
        try:
            reply = await self._call(
                self._orders, body, OrderReply, timeout_s=timeout + max(self.timeout_s, WAIT_REPLY_MARGIN_S)
            )
        except OrderRejected as exc:
            if exc.code in ("timeout", "wait_timeout"):
                raise OrderWaitTimeout(client_order_id, until, timeout, None) from None
            raise
        view = reply.order
        # same rule as the order manager: "live" is settled once IB works it or never will (done, Inactive)
        reached = view.is_done or (until == "live" and (view.is_live or view.status == "Inactive"))
        if not reached:
            raise OrderWaitTimeout(client_order_id, until, timeout, view)
        return view

    async def get_positions(self, strategy_id: str | None = None) -> list[Position]:
        """Positions from the portfolio: the whole account (None) or one strategy's (pass
        ``client.strategy_id`` for your own)."""
        body = validated(GetPositions(strategy_id=strategy_id))
        reply = await self._call(self._portfolio, body, PositionsReply)
        return list(reply.positions)

    async def get_account(self) -> PortfolioSnapshot:
        """Account summary, positions and per-strategy P&L from the portfolio."""
        reply = await self._call(self._portfolio, GetAccount(), AccountReply)
        return reply.snapshot

    async def qualify(self, instrument: str | Instrument) -> ContractInfo:
        """IB's contract for an instrument (the gateway asks IB's contract details): its conId, multiplier,
        currency, tick and size rules, trading hours. Raises :class:`OrderRejected` with ``unknown_symbol``,
        ``ambiguous_contract`` (several contracts match: say more) or ``contract_mismatch`` (it contradicts IB)."""
        inst = as_instrument(instrument)
        reply = await self._call(self._gateway, validated(QualifyInstrument(instrument=inst)), InstrumentReply)
        return reply.info

    async def subscribe_market_data(self, symbol: str | Instrument) -> MarketDataAck:
        """Start receiving the contract's ticks (``md.<conId>``: via :meth:`on_tick` / :meth:`ticks` /
        ``last_ticks``). The instrument is qualified first; the bus subscription is made ready *before* the
        gateway is asked for the stream, so the first ticks are not lost."""
        self._require(self._gateway)
        info = await self.qualify(symbol)
        con_id = info.con_id
        was_subscribed = self._md.wants(con_id)
        if not was_subscribed:
            await self.add_topic(topics.market_data(con_id))
        self._md.add(symbol, info)
        try:
            return await self._call(
                self._gateway,
                validated(SubscribeMarketData(instrument=info.instrument, subscriber=self.name)),
                MarketDataAck,
            )
        except BaseException:
            if not was_subscribed:
                await self._drop_md(con_id)
            raise

    async def unsubscribe_market_data(self, symbol: str | Instrument | int) -> MarketDataAck:
        """Stop receiving ticks of a subscribed contract (by the name it was subscribed with, its conId or its
        readable name) and tell the gateway this subscriber is gone."""
        con_id = self._md.resolve(symbol)
        info = self._md.contracts.get(con_id) if con_id is not None else None
        if info is None:
            raise OrderRejected("not_found", f"{symbol!r} is not a subscribed contract")
        await self._drop_md(info.con_id)
        return await self._call(
            self._gateway,
            validated(UnsubscribeMarketData(symbol=info.instrument.symbol, con_id=info.con_id, subscriber=self.name)),
            MarketDataAck,
        )

    def gateway_client(self) -> AsyncClient:
        """The gateway's request client (for :mod:`sdk.data`)."""
        return self._require(self._gateway)

    async def add_topic(self, topic: str) -> None:
        """Subscribe the event socket to ``topic`` and wait until the proxy delivers it (no first event lost)."""
        assert self._sub_lock is not None and self.subscriber is not None and self.publisher is not None
        async with self._sub_lock:
            await self._stop_reader()
            try:
                self.subscriber.subscribe(topic)
                await self.subscriber.wait_ready(self.publisher, timeout=self.ready_timeout_s)
            finally:
                self._start_reader()

    def drop_topic(self, topic: str) -> None:
        if self.subscriber is not None:
            self.subscriber.unsubscribe(topic)

    async def _drop_md(self, con_id: int) -> None:
        if self._md.wants(con_id) and self.subscriber is not None:
            self.subscriber.unsubscribe(topics.market_data(con_id))
        self._md.remove(con_id)
