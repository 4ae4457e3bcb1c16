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
answered with ``Rejected(code="internal")``; the actor keeps running. More than :data:`MAX_ERRORS` errors within
:data:`ERROR_WINDOW_S` means the actor's state is not trustworthy: it moves to FAULTED and exits with
:data:`EXIT_FAULTED` so supervisord restarts it from its durable state.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import zmq
import zmq.asyncio
from loguru import logger

from bus import topics
from bus.admission import Limits
from bus.codec import Stamper
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.heartbeat import GOODBYE_LINGER_MS
from bus.messages import (
    LEFT_STATE,
    GapReport,
    GetStatus,
    Heartbeat,
    Kill,
    Ping,
    Pong,
    Rejected,
    Request,
    ServiceStatus,
    bounded_detail,
    heartbeat_detail,
    tag_of,
)
from bus.pubsub import Publisher, Subscriber
from bus.reqrep import AsyncClient, CallContext, Service
from bus.security import Security

if TYPE_CHECKING:
    from bus.security import Security

INBOX_SIZE = 10_000
#: Every actor with a subscription also listens to the kill broadcast (:data:`bus.topics.KILL`) and records when
#: it first saw each kill (broadcast or direct request), so "has every actor seen the halt?" can be answered (and
#: benchmarked).
#: Heartbeat ``detail`` keys: ``kill_seen`` = ``<kill_id>@<CLOCK_MONOTONIC ns when this actor first saw it>``,
#: ``kill_sent`` = the sender's ``mono_ns`` stamp on the envelope that carried it (same clock on one host).
KILL_SEEN_DETAIL = "kill_seen"
KILL_SENT_DETAIL = "kill_sent"
MAX_ERRORS = 20
ERROR_WINDOW_S = 60.0
#: Exit codes: 0 clean stop, 70 (EX_SOFTWARE) faulted -> supervisord restarts, 78 (EX_CONFIG) -> FATAL.
EXIT_OK = 0
EXIT_FAULTED = 70
#: Upper bound for a graceful stop (supervisord's stopwaitsecs is set above this).
STOP_TIMEOUT_S = 1.0


class ActorState(StrEnum):
    CREATED = "CREATED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAULTED = "FAULTED"


#: The lifecycle as an explicit transition table: anything else is a bug and raises.
LIFECYCLE: dict[ActorState, frozenset[ActorState]] = {
    ActorState.CREATED: frozenset({ActorState.STARTING, ActorState.STOPPED}),
    ActorState.STARTING: frozenset({ActorState.RUNNING, ActorState.STOPPING, ActorState.FAULTED}),
    ActorState.RUNNING: frozenset({ActorState.STOPPING, ActorState.FAULTED}),
    ActorState.STOPPING: frozenset({ActorState.STOPPED, ActorState.FAULTED}),
    ActorState.FAULTED: frozenset({ActorState.STOPPING, ActorState.STOPPED}),
    ActorState.STOPPED: frozenset(),
}


#: every request type of the schema (the members of :data:`bus.messages.Request`)
REQUEST_TYPES: frozenset[type] = frozenset(get_args(Request))
#: a request handler: the call's context and the decoded body in, a reply struct out
Handler = Callable[[CallContext, Any], Awaitable[Any]]


class _StoppedWhileStarting(Exception):
    """stop() arrived before the actor was RUNNING."""


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
        self.server: Service | None = None
        self.inbox: asyncio.Queue[tuple[str, Any]] | None = None
        self._clients: dict[str, AsyncClient] = {}
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errors: deque[float] = deque()
        self._stop_requested = False
        self.security: Security | None = None
        #: (kill_id, seen mono_ns, sender's mono_ns) of the latest kill this actor saw (see KILL_SEEN_DETAIL)
        self.kill_seen: tuple[str, int, int] | None = None
        self._kill_extra = False
        self._handlers: Mapping[type, Handler] | None = None
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
        task = asyncio.ensure_future(step)
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _StoppedWhileStarting
        return task.result()

    def record_error(self, exc: BaseException) -> None:
        """Count an unexpected error; too many in the window faults the actor (see module docstring)."""
        now = time.monotonic()
        self._errors.append(now)
        while self._errors and now - self._errors[0] > ERROR_WINDOW_S:
            self._errors.popleft()
        if len(self._errors) > MAX_ERRORS and self.state == ActorState.RUNNING:
            logger.critical(
                "{}: {} errors in {:.0f}s, faulting so supervisord restarts me",
                self.name,
                len(self._errors),
                ERROR_WINDOW_S,
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
            self._handlers = dict(self.request_handlers())
        handler = self._handlers.get(type(body))
        if handler is None:
            return Rejected(
                code="unknown_command",
                reason=f"{self.name} does not handle {tag_of(type(body))}",
                request_type=tag_of(type(body)),
            )
        return await handler(ctx, body)

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
        key = f"{service}:{timeout_s}:{retries}"
        cl = self._clients.get(key)
        if cl is None:
            assert self.ctx is not None
            bus = self.cfg.bus
            cl = AsyncClient(
                self.ctx,
                bus.service_endpoint(service),
                service=service,
                stamper=self.stamper,
                timeout_s=bus.request_timeout_s if timeout_s is None else timeout_s,
                retries=bus.request_retries if retries is None else retries,
                security=self.security,
                server_key=self._server_key(service),
            )
            self._clients[key] = cl
        return cl

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
        """Record the first sighting of kill ``kill_id`` (CLOCK_MONOTONIC); a second path for the same kill (the
        request and the broadcast both arrive) keeps the first time."""
        if self.kill_seen is None or self.kill_seen[0] != kill_id:
            self.kill_seen = (kill_id, time.monotonic_ns(), sent_mono_ns)

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
            if self.topics:
                self.inbox = asyncio.Queue(maxsize=INBOX_SIZE)
                wanted = list(self.topics)
                self._kill_extra = not any(topics.KILL.startswith(t) for t in wanted)
                if self._kill_extra:  # only for note_kill(); on_event never sees these
                    wanted.append(topics.KILL)
                self.subscriber = Subscriber(
                    self.ctx,
                    bus.proxy_backend,
                    wanted,
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
        except _StoppedWhileStarting:
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
        for cl in self._clients.values():
            cl.close()
        for part in (self.server, self.subscriber):
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

    async def _consume(self) -> None:
        assert self.inbox is not None
        while True:
            topic, env = await self.inbox.get()
            if topic == topics.KILL and isinstance(env.body, Kill):
                self.note_kill(env.body.kill_id, env.mono_ns)
                if self._kill_extra:
                    continue
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
            detail = self.status_detail()
            if self.kill_seen is not None:
                kill_id, seen_ns, sent_ns = self.kill_seen
                detail = {KILL_SEEN_DETAIL: f"{kill_id}@{seen_ns}", KILL_SENT_DETAIL: str(sent_ns), **detail}
            # within the heartbeat's bounds: the actor's own facts (the gateway's halt latch among them) come before
            # the service load, so the entry bound can only ever cut load figures, and no value is clipped short
            beat = Heartbeat(
                actor=self.name, state=self.state.value, pid=pid, interval_s=interval, detail=heartbeat_detail(detail)
            )
            self.publish(topic, beat)
            await asyncio.sleep(interval)  # periodic timer, not synchronisation


def unhandled_requests(actor: Actor) -> tuple[set[type], set[type]]:
    """Exhaustiveness of a service's dispatch: (request types neither handled nor refused, types both handled and
    refused). Both are empty for a correct actor; tests call this for every service in the registry."""
    handled = set(actor.request_handlers())
    refused = set(type(actor).refused_requests)
    return set(REQUEST_TYPES) - handled - refused, handled & refused
