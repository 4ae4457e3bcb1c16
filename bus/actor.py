"""The actor base: one process, one asyncio loop, a bounded inbox, explicit lifecycle, a stated error policy.

An actor owns (all created inside its own process, never inherited across fork):

* a publisher to the event proxy and, if it subscribes to anything, a subscriber whose events go through a
  bounded inbox to :meth:`Actor.on_event`, one at a time in arrival order (state changes are single-threaded);
* optionally a request/reply :class:`~bus.reqrep.Service` whose calls run :meth:`Actor.on_request` concurrently
  (a handler that awaits another service must not stall the events);
* a heartbeat on ``hb.<name>``.

Backpressure: the reader stops pulling from the SUB socket when the inbox is full, so libzmq's HWM drops at the
proxy and the sequence check reports the gap: bounded memory, and never a silent loss.

Error policy (after NautilusTrader's live engines): an exception in a handler is logged with its context and
answered with ``Rejected(code="internal")``; the actor keeps running. More than :data:`~bus.lifecycle.MAX_ERRORS`
errors within :data:`~bus.lifecycle.ERROR_WINDOW_S` means the actor's state is not trustworthy: it moves to FAULTED
and exits with :data:`~bus.lifecycle.EXIT_FAULTED` so supervisord restarts it from its durable state.

Its collaborators live in their own modules: the lifecycle table and error budget (:mod:`bus.lifecycle`), the
request dispatch table (:mod:`bus.dispatch`) and the kill sightings its heartbeat reports (:mod:`bus.kill_sightings`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import zmq
import zmq.asyncio
from loguru import logger

from bus import topics
from bus.admission import Limits
from bus.async_client import AsyncClient
from bus.codec import Stamper
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.dispatch import REQUEST_TYPES, Handler, RequestTable, unhandled_requests
from bus.heartbeat import GOODBYE_LINGER_MS
from bus.kill_sightings import KILL_SEEN_DETAIL, KILL_SENT_DETAIL, KillDeliveries, KillSightings
from bus.lifecycle import (
    ERROR_WINDOW_S,
    EXIT_FAULTED,
    EXIT_OK,
    LIFECYCLE,
    MAX_ERRORS,
    STOP_TIMEOUT_S,
    ActorState,
    ErrorBudget,
    StoppedWhileStarting,
    unless_stopped,
)
from bus.messages import (
    LEFT_STATE,
    GapReport,
    GetStatus,
    Heartbeat,
    Kill,
    Ping,
    Pong,
    ServiceStatus,
    bounded_detail,
    heartbeat_detail,
    tag_of,
)
from bus.pubsub import Publisher, Subscriber
from bus.security import Security
from bus.service import CallContext, Service
from bus.service_clients import ServiceClients

INBOX_SIZE = 10_000
#: The kill lane's receive high-water mark: it carries only ``control.kill``.
KILL_LANE_HWM = 1_000

#: Also the names whose home is now a collaborator's module: docs, the brief and work in flight import them from here.
__all__ = [
    "ERROR_WINDOW_S",
    "EXIT_FAULTED",
    "EXIT_OK",
    "INBOX_SIZE",
    "KILL_SEEN_DETAIL",
    "KILL_SENT_DETAIL",
    "LIFECYCLE",
    "MAX_ERRORS",
    "REQUEST_TYPES",
    "STOP_TIMEOUT_S",
    "Actor",
    "ActorState",
    "Handler",
    "unhandled_requests",
]


class Actor:
    """Base class of every Khazad actor. Subclasses set ``name``, ``topics`` and ``service`` and override the
    ``on_*`` hooks; :meth:`run` does the rest."""

    #: process/actor name (heartbeat topic, envelope sender)
    name: str = "actor"
    #: event topic prefixes to subscribe to
    topics: tuple[str, ...] = ()
    #: name of the bus endpoint this actor serves (``bus.<service>`` in the config), or None
    service: str | None = None
    #: request types this service refuses on purpose (answered ``unknown_command``). Together with the keys of
    #: :meth:`request_handlers` they must cover :data:`REQUEST_TYPES` exactly: see :func:`unhandled_requests`.
    refused_requests: ClassVar[frozenset[type]] = frozenset()
    #: request types that wait long for an event (``WaitOrder``): they use the service's wait pools, never its
    #: shared request slots (bus/admission.py)
    waiting_requests: ClassVar[frozenset[type]] = frozenset()

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        if name:
            self.name = name
        self.cfg = cfg
        self.stamper = Stamper(self.name)
        self.state = ActorState.CREATED
        self.exit_code = EXIT_OK
        self.started_mono = time.monotonic()
        self.ctx: zmq.asyncio.Context | None = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        #: the kill lane: a subscription to ``control.kill`` alone, read by its own task (bus.kill_sightings)
        self.kill_lane: Subscriber | None = None
        self.server: Service | None = None
        self.inbox: asyncio.Queue[tuple[str, Any]] | None = None
        self._clients = ServiceClients(cfg.bus, self.stamper, self._server_key)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors = ErrorBudget()
        self._stop_requested = False
        self.security: Security | None = None
        #: the latest kill this actor saw, for its heartbeat
        self.kills = KillSightings()
        self._kill_deliveries = KillDeliveries()
        self._handlers: RequestTable | None = None
        #: the actor faulted (it exits to be restarted: no goodbye, the monitor must see a death)
        self._faulted = False
        self._goodbye_sent = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _transition(self, new: ActorState) -> None:
        if new not in LIFECYCLE[self.state]:
            raise RuntimeError(f"{self.name}: illegal lifecycle transition {self.state.value} -> {new.value}")
        logger.debug("{}: {} -> {}", self.name, self.state.value, new.value)
        self.state = new

    def stop(self, exit_code: int | None = None) -> None:
        """Ask the actor to stop (safe from signal handlers and other threads)."""
        if exit_code is not None:
            self.exit_code = exit_code
        self._stop_requested = True  # seen by run() if it has not started its loop yet
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _starting(self, step: Any) -> Any:
        """Await one start-up step unless stop() comes first: a SIGTERM while waiting for the proxy (or in
        on_start) must stop the actor within the shutdown bound, not after the step's own timeout."""
        assert self._stop is not None
        return await unless_stopped(step, self._stop)

    def record_error(self, exc: BaseException) -> None:
        """Count an unexpected error; too many in the window faults the actor (see module docstring)."""
        count = self._errors.record(time.monotonic())
        if self._errors.exceeded() and self.state == ActorState.RUNNING:
            logger.critical(
                "{}: {} errors in {:.0f}s, faulting so supervisord restarts me",
                self.name,
                count,
                self._errors.window_s,
            )
            self._faulted = True
            self._transition(ActorState.FAULTED)
            self.stop(EXIT_FAULTED)

    # -- hooks for subclasses ------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Connect to what the actor needs; runs before the service and inbox start."""

    async def on_started(self) -> None:
        """Runs once everything is serving (publish initial state here)."""

    async def on_stop(self) -> None:
        """Release resources; runs with a bounded time budget."""

    async def on_event(self, topic: str, env: Any) -> None:
        """Handle one event from the inbox."""

    def request_handlers(self) -> Mapping[type, Handler]:
        """The requests this actor serves: request type -> handler. Subclasses extend the base table
        (``{**super().request_handlers(), PlaceOrder: self._place, ...}``); the base answers Ping and GetStatus."""
        return {Ping: self._on_ping, GetStatus: self._on_get_status}

    async def on_request(self, ctx: CallContext, body: Any) -> Any:
        """Handle one request by its type (:meth:`request_handlers`); anything else is ``unknown_command``."""
        if self._handlers is None:
            self._handlers = RequestTable(self.name, self.request_handlers())
        return await self._handlers.dispatch(ctx, body)

    async def _on_ping(self, ctx: CallContext, body: Ping) -> Pong:
        return Pong(actor=self.name, state=self.state.value)

    async def _on_get_status(self, ctx: CallContext, body: GetStatus) -> ServiceStatus:
        return ServiceStatus(actor=self.name, state=self.state.value, detail=bounded_detail(self.status_detail()))

    def health_detail(self) -> dict[str, str]:
        """Small facts for the heartbeat and status (strings)."""
        return {}

    def status_detail(self) -> dict[str, str]:
        """:meth:`health_detail` plus the service's load (``saturated`` while it refuses for load), for the heartbeat
        and GetStatus."""
        detail = self.health_detail()
        if self.server is not None:
            detail = {**detail, **self.server.load_detail()}
        return detail

    def background_tasks(self) -> list[Any]:
        """Extra coroutines to run for the actor's lifetime (timers, sweeps)."""
        return []

    # -- helpers -------------------------------------------------------------------------------------------------

    def publish(self, topic: str, body: Any) -> None:
        assert self.publisher is not None
        self.publisher.publish(topic, body)

    def client(self, service: str, *, timeout_s: float | None = None, retries: int | None = None) -> AsyncClient:
        """A (cached) client to another actor's service, by bus endpoint name."""
        return self._clients.get(self.ctx, self.security, service, timeout_s=timeout_s, retries=retries)

    def _server_key(self, service: str) -> bytes | None:
        if self.security is None or not self.security.enabled:
            return None
        return self.security.server_key(service)

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
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

    def note_kill(self, kill_id: str, sent_mono_ns: int = 0) -> None:
        """Record the first sighting of kill ``kill_id`` (see :meth:`KillSightings.note`)."""
        self.kills.note(kill_id, sent_mono_ns)

    async def _handle_request(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, Kill):
            self.note_kill(body.kill_id, ctx.envelope.mono_ns)
        return await self.on_request(ctx, body)

    # -- run loop ------------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self._transition(ActorState.STARTING)
        bus = self.cfg.bus
        self.ctx = zmq.asyncio.Context()
        tasks: list[asyncio.Task[Any]] = []
        try:
            if bus.curve.enabled:
                self.security = Security.for_process(self.cfg, self.name)
                self.security.start_authenticator(self.ctx)  # loads (and checks) the operator's allow-list
            self.publisher = Publisher(
                self.ctx,
                bus.proxy_frontend,
                self.stamper,
                sndhwm=bus.send_hwm,
                security=self.security,
                server_key=self._server_key("proxy"),
            )
            await self._starting(
                self.publisher.wait_ready(
                    bus.proxy_backend, security=self.security, server_key=self._server_key("proxy")
                )
            )
            self.kill_lane = Subscriber(
                self.ctx,
                bus.proxy_backend,
                [topics.KILL],
                name=f"{self.name}.kill",
                rcvhwm=KILL_LANE_HWM,
                on_gap=self._on_gap,
                security=self.security,
                server_key=self._server_key("proxy"),
            )
            await self._starting(self.kill_lane.wait_ready(self.publisher))
            if self.topics:
                self.inbox = asyncio.Queue(maxsize=INBOX_SIZE)
                self.subscriber = Subscriber(
                    self.ctx,
                    bus.proxy_backend,
                    list(self.topics),
                    name=self.name,
                    rcvhwm=bus.recv_hwm,
                    on_gap=self._on_gap,
                    security=self.security,
                    server_key=self._server_key("proxy"),
                )
                await self._starting(self.subscriber.wait_ready(self.publisher))
            await self._starting(self.on_start())
            if self.service:
                self.server = Service(
                    self.ctx,
                    bus.service_endpoint(self.service),
                    self.name,
                    self._handle_request,
                    stamper=self.stamper,
                    allow_non_loopback=bus.allow_non_loopback,
                    security=self.security,
                    on_error=self.record_error,
                    limits=Limits(
                        inflight=bus.max_inflight,
                        inflight_per_caller=bus.max_inflight_per_caller,
                        waits=bus.max_waits,
                        waits_per_caller=bus.max_waits_per_caller,
                    ),
                    waiting=type(self).waiting_requests,
                )
                tasks.append(asyncio.create_task(self.server.run(), name=f"{self.name}.service"))
            tasks.append(asyncio.create_task(self._kill_lane_pump(), name=f"{self.name}.kill-lane"))
            if self.subscriber is not None:
                tasks.append(asyncio.create_task(self._pump(), name=f"{self.name}.pump"))
                tasks.append(asyncio.create_task(self._consume(), name=f"{self.name}.consume"))
            tasks.append(asyncio.create_task(self._heartbeat(), name=f"{self.name}.heartbeat"))
            for coro in self.background_tasks():
                tasks.append(asyncio.create_task(coro))
            self._transition(ActorState.RUNNING)
            logger.info(
                "{}: running (pid {}){}",
                self.name,
                os.getpid(),
                f", serving {self.server.endpoint}" if self.server else "",
            )
            await self._starting(self.on_started())
            stop_wait = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_wait and not t.cancelled() and t.exception() is not None:
                    logger.opt(exception=t.exception()).critical(
                        "{}: task {} died: {}", self.name, t.get_name(), t.exception()
                    )
                    self.exit_code = EXIT_FAULTED
                    self._faulted = True
                    if self.state == ActorState.RUNNING:
                        self._transition(ActorState.FAULTED)
            stop_wait.cancel()
        except StoppedWhileStarting:
            logger.info("{}: stop requested while starting", self.name)
        except ConfigError as exc:  # a missing key or an unsafe allow-list: no restart can fix it (FATAL)
            logger.critical("{}: configuration error: {}", self.name, exc)
            self.exit_code = EXIT_CONFIG
        finally:
            if self.state in (ActorState.RUNNING, ActorState.FAULTED, ActorState.STARTING):
                self._transition(ActorState.STOPPING)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(self.on_stop(), STOP_TIMEOUT_S)
            except (TimeoutError, Exception) as exc:  # shutdown must finish; log and go on
                logger.warning("{}: on_stop did not finish cleanly: {!r}", self.name, exc)
            self._say_goodbye()
            self._close_sockets()
            if self.state != ActorState.STOPPED:
                self._transition(ActorState.STOPPED)
            logger.info("{}: stopped (exit {})", self.name, self.exit_code)
        return self.exit_code

    def _say_goodbye(self) -> None:
        """A clean stop (not a fault) ends with a last heartbeat in state LEFT: the monitor shows the actor as gone
        on purpose, not dead (no ``actor_dead`` alert); an expected actor that left is still not running."""
        self._goodbye_sent = False
        if self.publisher is None or self.exit_code != EXIT_OK or self._faulted:
            return
        try:
            self.publish(
                topics.heartbeat(self.name),
                Heartbeat(
                    actor=self.name,
                    state=LEFT_STATE,
                    pid=os.getpid(),
                    interval_s=self.cfg.bus.heartbeat_interval_s,
                    detail={"reason": "stopped cleanly"},
                ),
            )
            self._goodbye_sent = True
        except zmq.ZMQError as exc:  # best effort: without it the monitor sees a death, which is the safe side
            logger.warning("{}: goodbye not sent: {}", self.name, exc)

    def _close_sockets(self) -> None:
        self._clients.close()
        for part in (self.server, self.subscriber, self.kill_lane):
            if part is not None:
                part.close()
        if self.publisher is not None:
            self.publisher.close(GOODBYE_LINGER_MS if self._goodbye_sent else 0)
        if self.security is not None:
            self.security.stop_authenticator()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)

    async def _pump(self) -> None:
        assert self.subscriber is not None and self.inbox is not None
        while True:
            item = await self.subscriber.recv()
            await self.inbox.put(item)

    async def _kill_lane_pump(self) -> None:
        """The kill lane's reader: a kill is seen (and, for an actor that subscribes to it, handled) as soon as it
        arrives, ahead of whatever waits in the main subscription and the inbox."""
        assert self.kill_lane is not None
        wanted = any(topics.KILL.startswith(t) for t in self.topics)
        while True:
            topic, env = await self.kill_lane.recv()
            if not isinstance(env.body, Kill):
                continue
            self.note_kill(env.body.kill_id, env.mono_ns)
            if wanted and self._kill_deliveries.first(env):
                await self._deliver(topic, env)

    async def _consume(self) -> None:
        assert self.inbox is not None
        while True:
            topic, env = await self.inbox.get()
            if topic == topics.KILL and isinstance(env.body, Kill):
                self.note_kill(env.body.kill_id, env.mono_ns)
                if not self._kill_deliveries.first(env):  # the kill lane delivered it already
                    continue
            await self._deliver(topic, env)

    async def _deliver(self, topic: str, env: Any) -> None:
        """``on_event`` under the error policy: log with context, count, keep going."""
        try:
            await self.on_event(topic, env)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # error policy: log with context, count, keep going
            logger.opt(exception=exc).error(
                "{}: on_event failed for {} ({} from {} seq {}): {}",
                self.name,
                topic,
                tag_of(type(env.body)),
                env.sender,
                env.seq,
                exc,
            )
            self.record_error(exc)

    async def _heartbeat(self) -> None:
        interval = self.cfg.bus.heartbeat_interval_s
        topic = topics.heartbeat(self.name)
        pid = os.getpid()
        while True:
            detail = {**self.kills.detail(), **self.status_detail()}
            # within the heartbeat's bounds: the actor's own facts (the gateway's halt latch among them) come before
            # the service load, so the entry bound can only ever cut load figures, and no value is clipped short
            beat = Heartbeat(
                actor=self.name, state=self.state.value, pid=pid, interval_s=interval, detail=heartbeat_detail(detail)
            )
            self.publish(topic, beat)
            await asyncio.sleep(interval)  # periodic timer, not synchronisation
