"""The strategy client's sockets and their lifetime (:class:`BusSession`, a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient`).

One ZeroMQ context holds: the event publisher (to the proxy's frontend) and the event subscriber (from its backend,
subscribed to the strategy's ``order.<strategy>`` updates and ``state.trading``), one request client per service
(order manager, portfolio, gateway, risk governor), the strategy's heartbeat and its goodbye. :meth:`BusSession.call`
is the one request path: a ``Rejected`` reply raises :class:`~sdk.errors.OrderRejected`, any other unexpected reply
:class:`~sdk.errors.UnexpectedReply`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from loguru import logger

from bus import topics
from bus.async_client import AsyncClient
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.heartbeat import GOODBYE_LINGER_MS
from bus.messages import LEFT_STATE, GetOrder, Heartbeat, Rejected, tag_of
from bus.pubsub import GapCallback, Publisher, Subscriber
from bus.security import Security, client_security
from sdk.endpoints import Endpoints, resolve_config, validated
from sdk.errors import KhazadClientError, OrderRejected, UnexpectedReply

T = TypeVar("T")


class BusSession:
    """The client's ZeroMQ context, event sockets and per-service request clients (see module docstring); its
    settings resolved from the client's arguments and the config (``bus.request_timeout_s``, ...)."""

    def __init__(
        self,
        strategy_id: str,
        *,
        config: KhazadConfig | str | os.PathLike[str] | None,
        endpoints: Endpoints | None,
        name: str | None,
        timeout_s: float | None,
        retries: int | None,
        ready_timeout_s: float,
    ) -> None:
        probe = validated(GetOrder(strategy_id=strategy_id, client_order_id="x"))  # validates the strategy id
        self.strategy_id = probe.strategy_id
        self.cfg = cfg = resolve_config(config)
        self.endpoints = endpoints or Endpoints.from_bus(cfg.bus)
        self.name = name = name or f"strategy.{strategy_id}"
        self.timeout_s = cfg.bus.request_timeout_s if timeout_s is None else timeout_s
        self.retries = cfg.bus.request_retries if retries is None else retries
        self.ready_timeout_s = ready_timeout_s
        self.stamper = Stamper(name)
        self.ctx: zmq.asyncio.Context | None = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.orders: AsyncClient | None = None
        self.portfolio: AsyncClient | None = None
        self.gateway: AsyncClient | None = None
        self.risk: AsyncClient | None = None
        self._security: Security | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._goodbye_sent = False
        self.started = False
        self.closed = False

    async def open(self, on_gap: GapCallback) -> None:
        """Connect every socket and make the event subscription ready (proxy handshake); on failure nothing stays
        open."""
        ep = self.endpoints
        self.ctx = zmq.asyncio.Context()
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
                on_gap=on_gap,
                security=self._security,
                server_key=self._server_key("proxy"),
            )
            await self.subscriber.wait_ready(self.publisher, timeout=self.ready_timeout_s)
            self.orders = self._client(ep.orders, "orders")
            self.portfolio = self._client(ep.portfolio, "portfolio")
            self.gateway = self._client(ep.gateway, "gateway")
            self.risk = self._client(ep.risk or self.cfg.bus.risk, "risk")
        except BaseException:
            self.close_sockets()
            raise

    def start_heartbeat(self) -> None:
        self._hb_task = asyncio.create_task(self._heartbeat(), name=f"{self.name}.heartbeat")

    async def stop_heartbeat(self) -> None:
        if self._hb_task is not None:
            self._hb_task.cancel()
            await asyncio.gather(self._hb_task, return_exceptions=True)

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

    def say_goodbye(self) -> None:
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

    def close_sockets(self) -> None:
        for part in (self.orders, self.portfolio, self.gateway, self.risk, self.subscriber):
            if part is not None:
                part.close()
        if self.publisher is not None:
            self.publisher.close(GOODBYE_LINGER_MS if self._goodbye_sent else 0)
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None

    def require(self, cl: AsyncClient | None) -> AsyncClient:
        """``cl`` while the client runs; else :class:`KhazadClientError` (not started, or closed)."""
        if not self.started or self.closed or cl is None:
            raise KhazadClientError("client is not started (use `async with` or await start())")
        return cl

    async def call(
        self,
        cl: AsyncClient | None,
        body: Any,
        expect: type[T] | tuple[type[T], ...],
        *,
        timeout_s: float | None = None,
    ) -> T:
        """One request to a service; its reply if it is one of ``expect`` (see module docstring for the errors)."""
        reply = await self.require(cl).call(body, timeout_s=timeout_s)
        if isinstance(reply, Rejected):
            raise OrderRejected(reply.code, reply.reason, request_type=reply.request_type or tag_of(type(body)))
        if not isinstance(reply, expect):
            raise UnexpectedReply(f"{tag_of(type(body))}: unexpected reply {tag_of(type(reply))}")
        return reply

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
