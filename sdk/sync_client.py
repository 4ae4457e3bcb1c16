"""The blocking strategy client, :class:`KhazadClient`: the methods of :class:`~sdk.async_client.AsyncKhazadClient`,
which it runs on a private I/O thread; callbacks run on one dispatcher thread in arrival order."""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar

from loguru import logger

from bus.config import KhazadConfig
from bus.messages import (
    BarEvent,
    BarsAck,
    ContractInfo,
    DailyPnlReply,
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
    WhatIfReply,
)
from bus.pubsub import READY_TIMEOUT_S
from sdk.async_client import AsyncKhazadClient, Callback, Filter, Until
from sdk.conflation import LatestTicks, deliver_latest
from sdk.endpoints import Endpoints
from sdk.errors import KhazadClientError
from sdk.market import LastTicks
from sdk.streams import CLOSED, SyncStream

#: The dispatcher's job for conflated ticks (the ticks themselves wait in :class:`~sdk.conflation.LatestTicks`).
CONFLATED = "tick:conflated"
#: How long close() gives the I/O thread to finish (it only closes sockets).
CLOSE_TIMEOUT_S = 5.0
T = TypeVar("T")


class KhazadClient:
    """Blocking strategy client with the same methods as :class:`AsyncKhazadClient`.

    It runs the asyncio client on a private I/O thread. Callbacks (``on_order_update``, ``on_tick``,
    ``on_trading_state``) run on one dispatcher thread, in arrival order, and may call the client's methods.
    Iterators (``order_updates()``, ``ticks()``) block; their ``get(timeout)`` returns None on timeout.
    Use as a context manager or call :meth:`close`. ``conflate_ticks=True``: a slow ``on_tick`` callback gets the
    newest tick of each contract, never a backlog (:mod:`sdk.conflation`).
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
        self._aclient = AsyncKhazadClient(
            strategy_id,
            config=config,
            endpoints=endpoints,
            name=name,
            timeout_s=timeout_s,
            retries=retries,
            ready_timeout_s=ready_timeout_s,
            log_level=log_level,
        )
        self.strategy_id = self._aclient.strategy_id
        self.name = self._aclient.name
        self._loop = asyncio.new_event_loop()
        self._io = threading.Thread(target=self._loop.run_forever, name=f"{self.name}.io", daemon=True)
        self._dispatch_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"{self.name}.callbacks", daemon=True)
        self._sync_callbacks: dict[str, list[Callback]] = {"order": [], "tick": [], "state": [], "bar": []}
        self._sync_streams: dict[str, set[SyncStream[Any]]] = {k: set() for k in self._sync_callbacks}
        self._lock = threading.Lock()
        #: ``conflate_ticks``: the newest undelivered tick per contract for the callbacks (:mod:`sdk.conflation`)
        self._latest = LatestTicks() if conflate_ticks else None
        self.closed = False
        self._io.start()
        self._dispatcher.start()
        try:
            self._run(self._start())
        except BaseException:
            self.close()
            raise

    async def _start(self) -> None:
        await self._aclient.start()
        for kind in ("order", "tick", "state", "bar"):
            self._aclient.events.register(kind, functools.partial(self._fanout, kind))

    def _fanout(self, kind: str, item: Any) -> None:
        # runs on the I/O thread: streams are thread-safe queues; callbacks go to the dispatcher thread
        with self._lock:
            streams = list(self._sync_streams[kind])
            has_callbacks = bool(self._sync_callbacks[kind])
        for s in streams:
            s.push(item)
        if not has_callbacks:
            return
        if kind == "tick" and self._latest is not None:
            if self._latest.put(item):  # one wake-up per batch: ticks arriving meanwhile replace each other
                self._dispatch_q.put((CONFLATED, None))
        else:
            self._dispatch_q.put((kind, item))

    def _dispatch(self) -> None:
        while True:
            job = self._dispatch_q.get()
            if job is CLOSED:
                return
            kind, item = job
            if kind == CONFLATED and self._latest is not None:
                with self._lock:
                    callbacks = list(self._sync_callbacks["tick"])
                deliver_latest(self._latest, callbacks)
                continue
            with self._lock:
                callbacks = list(self._sync_callbacks[kind])
            for cb in callbacks:
                try:
                    cb(item)
                except Exception as exc:  # a strategy bug must not stop the dispatcher
                    logger.opt(exception=exc).error("sdk: {} callback {!r} failed: {}", kind, cb, exc)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._io:
            coro.close()
            raise KhazadClientError("blocking client method called on the client's I/O thread")
        if self.closed and not self._loop.is_running():
            coro.close()
            raise KhazadClientError("client is closed")
        # every coroutine is bounded by the request timeouts, so waiting for its result cannot hang
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close sockets and stop the threads (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._loop.is_running():
                asyncio.run_coroutine_threadsafe(self._aclient.close(), self._loop).result(CLOSE_TIMEOUT_S)
        except Exception as exc:  # shutdown must finish
            logger.warning("sdk: {} close failed: {!r}", self.name, exc)
        finally:
            with self._lock:
                streams = [s for group in self._sync_streams.values() for s in group]
            for s in streams:
                s.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._io.join(CLOSE_TIMEOUT_S)
            if not self._io.is_alive():
                self._loop.close()
            self._dispatch_q.put(CLOSED)
            if threading.current_thread() is not self._dispatcher:
                self._dispatcher.join(CLOSE_TIMEOUT_S)

    def __enter__(self) -> KhazadClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- events --------------------------------------------------------------------------------------------------

    def _register(self, kind: str, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._sync_callbacks[kind].append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._sync_callbacks[kind]:
                    self._sync_callbacks[kind].remove(callback)

        return unregister

    def on_order_update(self, callback: Callable[[OrderUpdate], Any]) -> Callable[[], None]:
        """``callback(update)`` on the dispatcher thread for each of this strategy's order updates."""
        return self._register("order", callback)

    def on_tick(self, callback: Callable[[TickEvent], Any]) -> Callable[[], None]:
        """``callback(tick)`` on the dispatcher thread for each tick of a subscribed symbol."""
        return self._register("tick", callback)

    def on_trading_state(self, callback: Callable[[TradingStateEvent], Any]) -> Callable[[], None]:
        """``callback(event)`` on the dispatcher thread for each ``state.trading`` change."""
        return self._register("state", callback)

    def _stream(self, kind: str, pred: Callable[[Any], bool] | None) -> SyncStream[Any]:
        def unregister(s: SyncStream[Any]) -> None:
            with self._lock:
                self._sync_streams[kind].discard(s)

        stream: SyncStream[Any] = SyncStream(unregister, kind, pred)
        if self.closed:
            stream.push(CLOSED)
        else:
            with self._lock:
                self._sync_streams[kind].add(stream)
        return stream

    def order_updates(self, client_order_id: str | None = None) -> SyncStream[OrderUpdate]:
        """``for update in client.order_updates():`` (blocking) or ``stream.get(timeout)``; updates from now on."""
        pred = None if client_order_id is None else (lambda u: u.order.spec.client_order_id == client_order_id)
        return self._stream("order", pred)

    def ticks(self, symbol: str | Instrument | int | None = None) -> SyncStream[TickEvent]:
        """Ticks of subscribed contracts (optionally one: see :meth:`AsyncKhazadClient.ticks`) from now on."""
        md = self._aclient.market_requests.md
        return self._stream("tick", None if symbol is None else (lambda t: md.matches(symbol, t)))

    def on_bar(self, callback: Callable[[BarEvent], Any]) -> Callable[[], None]:
        """``callback(bar)`` on the dispatcher thread for each bar of a :meth:`subscribe_bars` stream."""
        return self._register("bar", callback)

    def bars(self, instrument: str | Instrument | int | None = None) -> SyncStream[BarEvent]:
        """Bars of subscribed streams (optionally one contract's) from now on."""
        data = self._aclient.data
        return self._stream("bar", None if instrument is None else (lambda b: data.bar_matches(instrument, b)))

    def trading_states(self) -> SyncStream[TradingStateEvent]:
        return self._stream("state", None)

    def trading_state(self, symbol: str | None = None) -> str:
        """See :meth:`AsyncKhazadClient.trading_state`."""
        return self._aclient.trading_state(symbol)

    def trading_state_of(self, scope: str) -> TradingStateEvent | None:
        """See :meth:`AsyncKhazadClient.trading_state_of`."""
        return self._aclient.trading_state_of(scope)

    def refresh_trading_state(self) -> TradingStateReply:
        """See :meth:`AsyncKhazadClient.refresh_trading_state`."""
        return self._run(self._aclient.refresh_trading_state())

    @property
    def last_ticks(self) -> LastTicks:
        """A snapshot of the last tick per subscribed contract (see :class:`sdk.market.LastTicks`)."""
        return self._aclient.last_ticks.snapshot()

    @property
    def gaps(self) -> int:
        return self._aclient.gaps

    # -- requests (same signatures and errors as AsyncKhazadClient) ---------------------------------------------

    def ping(self, service: Literal["orders", "portfolio", "gateway"] = "orders") -> str:
        return self._run(self._aclient.ping(service))

    def place_order(self, order: OrderSpec) -> OrderView:
        return self._run(self._aclient.place_order(order))

    def place_market_order(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        *,
        client_order_id: str | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
    ) -> OrderView:
        return self._run(
            self._aclient.place_market_order(
                symbol, side, quantity, client_order_id=client_order_id, tif=tif, outside_rth=outside_rth
            )
        )

    def place_limit_order(
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
        return self._run(
            self._aclient.place_limit_order(
                symbol,
                side,
                quantity,
                limit_price,
                client_order_id=client_order_id,
                tif=tif,
                outside_rth=outside_rth,
                round_to_tick=round_to_tick,
            )
        )

    def place_stop_order(
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
        return self._run(
            self._aclient.place_stop_order(
                symbol,
                side,
                quantity,
                stop_price,
                limit_price=limit_price,
                client_order_id=client_order_id,
                tif=tif,
                outside_rth=outside_rth,
                round_to_tick=round_to_tick,
            )
        )

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> OrderView:
        return self._run(
            self._aclient.modify_order(
                client_order_id, quantity=quantity, limit_price=limit_price, stop_price=stop_price
            )
        )

    def place_trailing_stop(
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
        return self._run(
            self._aclient.place_trailing_stop(
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
        )

    def place_group(self, group: OrderGroup) -> GroupView:
        return self._run(self._aclient.place_group(group))

    def place_bracket_order(
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
        return self._run(
            self._aclient.place_bracket_order(
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
        )

    def place_oca_group(
        self, orders: Sequence[OrderSpec], *, oca_type: int = 1, group_id: str | None = None
    ) -> GroupView:
        return self._run(self._aclient.place_oca_group(orders, oca_type=oca_type, group_id=group_id))

    def get_group(self, group_id: str) -> GroupView:
        return self._run(self._aclient.get_group(group_id))

    def cancel_group(self, group_id: str, *, reason: str = "") -> GroupView:
        return self._run(self._aclient.cancel_group(group_id, reason=reason))

    def cancel_order(self, client_order_id: str, *, reason: str = "") -> OrderView:
        return self._run(self._aclient.cancel_order(client_order_id, reason=reason))

    def cancel_all_orders(self, symbol: str | None = None, *, reason: str = "") -> list[OrderView]:
        return self._run(self._aclient.cancel_all_orders(symbol, reason=reason))

    def get_order(self, client_order_id: str) -> OrderView:
        return self._run(self._aclient.get_order(client_order_id))

    def get_orders(self, filter: Filter = "open", symbol: str | None = None) -> list[OrderView]:
        return self._run(self._aclient.get_orders(filter, symbol))

    def wait_for_order(self, client_order_id: str, until: Until = "live", *, timeout: float = 10.0) -> OrderView:
        return self._run(self._aclient.wait_for_order(client_order_id, until, timeout=timeout))

    def get_positions(self, strategy_id: str | None = None) -> list[Position]:
        return self._run(self._aclient.get_positions(strategy_id))

    def get_account(self) -> PortfolioSnapshot:
        return self._run(self._aclient.get_account())

    def qualify(self, instrument: str | Instrument) -> ContractInfo:
        return self._run(self._aclient.qualify(instrument))

    def subscribe_market_data(self, symbol: str | Instrument) -> MarketDataAck:
        return self._run(self._aclient.subscribe_market_data(symbol))

    def unsubscribe_market_data(self, symbol: str | Instrument | int) -> MarketDataAck:
        return self._run(self._aclient.unsubscribe_market_data(symbol))

    # -- data (sdk/data.py; same signatures and errors as AsyncKhazadClient) ------------------------------------

    def get_historical_bars(self, instrument: str | Instrument, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`sdk.data.DataApi.get_historical_bars` (a list of Bar, or a DataFrame with
        ``as_dataframe=True``)."""
        return self._run(self._aclient.data.get_historical_bars(instrument, *args, **kwargs))

    def subscribe_bars(self, instrument: str | Instrument, *args: Any, **kwargs: Any) -> BarsAck:
        """See :meth:`sdk.data.DataApi.subscribe_bars`."""
        return self._run(self._aclient.data.subscribe_bars(instrument, *args, **kwargs))

    def unsubscribe_bars(self, instrument: str | Instrument | int, *args: Any, **kwargs: Any) -> BarsAck:
        return self._run(self._aclient.data.unsubscribe_bars(instrument, *args, **kwargs))

    def get_contract_details(self, instrument: str | Instrument) -> list[ContractInfo]:
        return self._run(self._aclient.data.get_contract_details(instrument))

    def search_contracts(self, pattern: str) -> list[Instrument]:
        return self._run(self._aclient.data.search_contracts(pattern))

    def what_if(self, order: OrderSpec) -> WhatIfReply:
        return self._run(self._aclient.data.what_if(order))

    def get_pnl(self) -> DailyPnlReply:
        return self._run(self._aclient.data.get_pnl())
