"""One CLI invocation's connection to the bus: the configuration and CURVE key (checked before anything is sent),
request clients by service, a broadcast confirmed by seeing it come back through the proxy, the outcome of
sending one command to one destination (:class:`Leg`), and the one-request queries of ``orders``, ``positions``
and ``account``.

Every command reads the endpoints from the configuration (``--config``, ``$KHAZAD_CONFIG`` or ``./khazad.toml``;
``KHAZAD__BUS__GATEWAY=tcp://...`` style overrides work too).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.async_client import AsyncClient
from bus.codec import Stamper
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from bus.messages import CancelReport, Rejected, tag_of
from bus.pubsub import Publisher, Subscriber
from bus.retry import RequestTimeout
from bus.security import OPERATOR_KEY, Security, client_security
from cli.exit_codes import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from cli.output import err

#: Bound for the bus broadcast leg (handshake + seeing our own message come back through the proxy).
BROADCAST_TIMEOUT_S = 5.0
#: CURVE key pair the CLI uses unless bus.curve.key_name names another (an operator's, on the allow-list).
CLI_KEY_NAME = OPERATOR_KEY
#: How a broadcast that never got through the proxy's ready handshake is reported.
HANDSHAKE_FAILED = "the proxy did not answer the ready handshake"


def origin() -> str:
    """Who sent a command: ``cli@<host>:<user>`` (audit trail in the gateway's and risk's logs)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): still send the command
        user = "unknown"
    return f"cli@{socket.gethostname()}:{user}"


def load(args: argparse.Namespace) -> KhazadConfig:
    """The configuration, with the CLI's CURVE key checked too: every ConfigError surfaces before anything is
    sent."""
    cfg = load_config(getattr(args, "config", None))
    security_for(cfg)
    return cfg


def security_for(cfg: KhazadConfig) -> Security | None:
    return client_security(cfg, CLI_KEY_NAME)


def server_key(security: Security | None, service: str) -> bytes | None:
    return security.server_key(service) if security is not None and security.enabled else None


class Session:
    """One CLI invocation's sockets (asyncio context, clients by service); everything closed with linger 0."""

    def __init__(self, cfg: KhazadConfig, timeout_s: float, retries: int) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.retries = retries
        self.security = security_for(cfg)
        self.ctx = zmq.asyncio.Context()
        self.stamper = Stamper(f"cli-{socket.gethostname()[:24]}-{uuid.uuid4().hex[:6]}")
        self._clients: list[AsyncClient] = []

    def client(
        self, service: str, *, timeout_s: float | None = None, retries: int | None = None, watch_handshake: bool = False
    ) -> AsyncClient:
        cl = AsyncClient(
            self.ctx,
            self.cfg.bus.service_endpoint(service),
            service=service,
            stamper=self.stamper,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            retries=self.retries if retries is None else retries,
            security=self.security,
            server_key=server_key(self.security, service),
            watch_handshake=watch_handshake,
        )
        self._clients.append(cl)
        return cl

    async def broadcast(
        self, topic: str | None, body: Any = None, match: Any = None, timeout_s: float = BROADCAST_TIMEOUT_S
    ) -> None:
        """Publish ``body`` on ``topic`` and return once it came back through the proxy (proof the proxy has it
        and forwards it); raises TimeoutError otherwise. ``topic=None`` only does the ready handshake (a proxy
        liveness probe)."""
        bus = self.cfg.bus
        key = server_key(self.security, "proxy")
        pub = Publisher(self.ctx, bus.proxy_frontend, self.stamper, security=self.security, server_key=key)
        sub = Subscriber(
            self.ctx,
            bus.proxy_backend,
            [topic] if topic else [],
            name=self.stamper.sender,
            security=self.security,
            server_key=key,
        )
        handshaken = False
        try:
            deadline = time.monotonic() + timeout_s
            # the subscriber's ready handshake publishes its probes through ``pub``: one probe seen proves both
            # connections and both subscriptions (a separate publisher handshake would cost a third connection, and
            # its CURVE and ZAP work lands on the proxy just as a kill is relayed through it)
            await sub.wait_ready(pub, timeout=max(0.1, deadline - time.monotonic()))
            handshaken = True
            if topic is None:
                return
            pub.publish(topic, body)
            while True:
                _, env = await asyncio.wait_for(sub.recv(), max(0.01, deadline - time.monotonic()))
                if match(env.body):
                    return
        except TimeoutError:  # asyncio's is the builtin since 3.11: the handshake's and wait_for's
            what = HANDSHAKE_FAILED if not handshaken else f"{topic} was not seen back through the proxy"
            raise TimeoutError(f"{what} within {timeout_s:g}s") from None
        finally:
            sub.close()
            pub.close()

    def close(self) -> None:
        for cl in self._clients:
            cl.close()
        self.ctx.destroy(linger=0)


def run_session(cfg: KhazadConfig, timeout_s: float, retries: int, job: Any) -> Any:
    async def main() -> Any:
        session = Session(cfg, timeout_s, retries)
        try:
            return await job(session)
        finally:
            session.close()

    return asyncio.run(main())


@dataclass
class Leg:
    """The outcome of sending one command to one destination."""

    target: str
    ok: bool = False
    status: str = (
        "not_sent"  # confirmed | acknowledged | broadcast | pending | unconfirmed | unreachable | rejected | error
    )
    detail: str = ""
    reply: Any = None
    #: how long this leg's connection took to come up before its command was sent (ms; None: not measured, or it
    #: was not up within the wait and the command was queued behind the handshake)
    connect_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        reply = msgspec.to_builtins(self.reply) if self.reply is not None else None
        return {
            "target": self.target,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "reply": reply,
            "connect_ms": self.connect_ms,
        }


async def connected_leg(target: str, client: AsyncClient, body: Any, wait_s: float) -> Leg:
    """Wait (at most ``wait_s``) until ``client``'s connection is up, then send ``body``: the command is stamped
    when it can leave, and each leg waits only for its own connection. A connection not up by then does not hold
    the command back: it is sent and queued, and leaves when the handshake completes (as without the wait)."""
    up = await client.connected(wait_s)
    leg = await request_leg(target, client.call(body))
    watch = client.handshake
    if up and watch is not None and watch.succeeded_ns is not None:
        leg.connect_ms = (watch.succeeded_ns - watch.started_ns) / 1e6
    return leg


async def request_leg(target: str, call: Any) -> Leg:
    leg = Leg(target)
    try:
        reply = await call
    except RequestTimeout as exc:
        leg.status, leg.detail = "unreachable", str(exc)
        return leg
    except Exception as exc:  # report every failure as a leg result; a kill must never crash half-way
        leg.status, leg.detail = "error", f"{type(exc).__name__}: {exc}"
        return leg
    leg.reply = reply
    if isinstance(reply, Rejected):
        leg.status, leg.detail = "rejected", f"{reply.code}: {reply.reason}"
    else:
        leg.ok, leg.status = True, "acknowledged"
        if isinstance(reply, CancelReport):
            leg.detail = (
                f"{reply.trading_state} (epoch {reply.epoch}), cancelled {reply.cancelled}, "
                f"remaining {reply.remaining}{' - ' + reply.detail if reply.detail else ''}"
            )
        else:
            leg.detail = getattr(reply, "detail", "") if isinstance(getattr(reply, "detail", ""), str) else ""
    return leg


async def broadcast_leg(
    session: Session, topic: str, body: Any, match: Any, timeout_s: float = BROADCAST_TIMEOUT_S
) -> Leg:
    leg = Leg(f"bus:{topic}")
    try:
        await session.broadcast(topic, body, match, timeout_s)
        leg.ok, leg.status, leg.detail = True, "broadcast", "seen back through the proxy"
    except TimeoutError as exc:
        text = str(exc)
        if text.startswith(HANDSHAKE_FAILED):
            hint = (
                "the proxy is down, or it refused this key (is it in the allow-list?)"
                if session.security is not None and session.security.enabled
                else "is the proxy running?"
            )
        else:  # the proxy answered the handshake: it runs, and did not forward this topic from this sender
            hint = "the proxy is up but did not forward it: may this key publish it?"
        leg.status, leg.detail = "unconfirmed", f"{text} ({hint})"
    except Exception as exc:  # see _request_leg
        leg.status, leg.detail = "error", f"{type(exc).__name__}: {exc}"
    return leg


def query(cfg: KhazadConfig, service: str, body: Any, timeout_s: float | None) -> Any:
    per_attempt = timeout_s if timeout_s is not None else cfg.bus.request_timeout_s

    async def job(session: Session) -> Any:
        return await session.client(service).call(body)

    return run_session(cfg, per_attempt, cfg.bus.request_retries, job)


def query_cmd(args: argparse.Namespace, service: str, body: Any, expect: type) -> tuple[int, Any]:
    """Run one query; returns (exit code, reply). Prints the failure itself."""
    name = args.command
    try:
        cfg = load(args)
    except ConfigError as exc:
        err(f"khazad {name}: configuration error: {exc}")
        return EXIT_CONFIG, None
    try:
        reply = query(cfg, service, body, args.timeout)
    except RequestTimeout as exc:
        err(f"khazad {name}: {service} unreachable: {exc}")
        return EXIT_UNREACHABLE, None
    if isinstance(reply, Rejected):
        err(f"khazad {name}: {service} refused: {reply.code}: {reply.reason}")
        return EXIT_REFUSED, reply
    if not isinstance(reply, expect):
        err(f"khazad {name}: unexpected reply {tag_of(type(reply))} from {service}")
        return EXIT_REFUSED, reply
    return EXIT_OK, reply
