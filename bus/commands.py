"""Operator subcommands: ``kill``, ``resume``, ``status``, ``orders``, ``positions``, ``account`` and ``sim`` (runs
the simulator). Registered into ``khazad`` by :mod:`bus.cli`.

Every command reads the endpoints from the configuration (``--config``, ``$KHAZAD_CONFIG`` or ``./khazad.toml``;
``KHAZAD__BUS__GATEWAY=tcp://...`` style overrides work too), prints readable tables for people and, with
``--json``, one JSON document with stable keys for scripts.

``kill`` is built to be trusted: the ``Kill`` goes straight to the gateway as an acknowledged request (the reply is
a ``CancelReport``), to the risk governor (so the policy side halts even if the bus copy is lost) and on the bus
(``control.kill``, confirmed by seeing it come back through the proxy). All three legs run at the same time, each
bounded. The exit code says what the gateway confirmed:

=====  ========================================================================================
0      the gateway confirmed: trading halted and no order left working in the scope
2      the gateway could not be reached (no reply within the timeout)
3      the gateway answered but did not confirm (orders remain working, or it could not verify)
4      the gateway refused the command (``Rejected``: e.g. a malformed scope)
78     configuration error
=====  ========================================================================================

(argparse also exits 2 on a usage error; it prints the usage, the kill prints ``KILL NOT CONFIRMED``.)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.codec import Stamper, validate
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from bus.messages import (
    AccountReply, ActorHealth, CancelReport, GatewayStatus, GetAccount, GetPositions, GetStatus, GetSystemStatus,
    Kill, ListOrders, OrderListReply, OrderView, Ping, Pong, PositionsReply, Rejected, Resume, RiskStateReply,
    ServiceStatus, SystemStatusReply, tag_of,
)
from bus.pubsub import Publisher, Subscriber
from bus.reqrep import AsyncClient, RequestTimeout

EXIT_OK = 0
#: ``status``: something is down or unreachable
EXIT_DEGRADED = 1
EXIT_UNREACHABLE = 2
EXIT_NOT_CONFIRMED = 3
EXIT_REFUSED = 4

KILL_TOPIC = "control.kill"
RESUME_TOPIC = "control.resume"
#: Bound for the bus broadcast leg (handshake + seeing our own message come back through the proxy).
BROADCAST_TIMEOUT_S = 5.0
#: Retries of the kill request to the gateway (same request id: the gateway runs the kill once).
KILL_RETRIES = 1
#: Services ``status`` asks directly when the monitor does not answer.
STATUS_SERVICES = ("gateway", "risk", "orders", "portfolio", "monitor")
#: CURVE key pair the CLI uses unless bus.curve.key_name names another (role ``operator``).
CLI_KEY_NAME = "operator"
#: Console width when the output is not a terminal (pipes, logs): wide enough for the orders table.
PIPE_WIDTH = 160


def origin() -> str:
    """Who sent a command: ``cli@<host>:<user>`` (audit trail in the gateway's and risk's logs)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): still send the command
        user = "unknown"
    return f"cli@{socket.gethostname()}:{user}"


# ---------------------------------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------------------------------


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH, highlight=False)


def _print_json(doc: Any) -> None:
    sys.stdout.write(msgspec.json.encode(msgspec.to_builtins(doc)).decode() + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()


def _num(value: float | None, fmt: str = "{:,.2f}") -> str:
    return "" if value is None else fmt.format(value)


def _qty(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _time(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9).strftime("%H:%M:%S") if wall_ns else ""


def _load(args: argparse.Namespace) -> KhazadConfig:
    """The configuration, with the CLI's CURVE key checked too: every ConfigError surfaces before anything is
    sent."""
    cfg = load_config(getattr(args, "config", None))
    _security(cfg)
    return cfg


def _security(cfg: KhazadConfig) -> Any:
    from bus.security import client_security

    return client_security(cfg, CLI_KEY_NAME)


def _server_key(security: Any, service: str) -> str | None:
    return security.server_key(service) if security is not None and security.enabled else None


class _Session:
    """One CLI invocation's sockets (asyncio context, clients by service); everything closed with linger 0."""

    def __init__(self, cfg: KhazadConfig, timeout_s: float, retries: int) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.retries = retries
        self.security = _security(cfg)
        self.ctx = zmq.asyncio.Context()
        self.stamper = Stamper(f"cli-{socket.gethostname()[:24]}-{uuid.uuid4().hex[:6]}")
        self._clients: list[AsyncClient] = []

    def client(self, service: str, *, timeout_s: float | None = None, retries: int | None = None) -> AsyncClient:
        cl = AsyncClient(self.ctx, self.cfg.bus.service_endpoint(service), service=service, stamper=self.stamper,
                         timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                         retries=self.retries if retries is None else retries, security=self.security,
                         server_key=_server_key(self.security, service))
        self._clients.append(cl)
        return cl

    async def broadcast(self, topic: str | None, body: Any = None, match: Any = None,
                        timeout_s: float = BROADCAST_TIMEOUT_S) -> None:
        """Publish ``body`` on ``topic`` and return once it came back through the proxy (proof the proxy has it
        and forwards it); raises TimeoutError otherwise. ``topic=None`` only does the ready handshake (a proxy
        liveness probe)."""
        bus = self.cfg.bus
        key = _server_key(self.security, "proxy")
        pub = Publisher(self.ctx, bus.proxy_frontend, self.stamper, security=self.security, server_key=key)
        sub = Subscriber(self.ctx, bus.proxy_backend, [topic] if topic else [], name=self.stamper.sender,
                         security=self.security, server_key=key)
        try:
            deadline = time.monotonic() + timeout_s
            await pub.wait_ready(bus.proxy_backend, timeout=timeout_s, security=self.security, server_key=key)
            await sub.wait_ready(pub, timeout=max(0.1, deadline - time.monotonic()))
            if topic is None:
                return
            pub.publish(topic, body)
            while True:
                _, env = await asyncio.wait_for(sub.recv(), max(0.01, deadline - time.monotonic()))
                if match(env.body):
                    return
        except TimeoutError:  # asyncio's is the builtin since 3.11: the handshake's and wait_for's
            what = "the proxy did not answer the ready handshake" if topic is None else \
                f"{topic} was not seen back through the proxy"
            raise TimeoutError(f"{what} within {timeout_s:g}s") from None
        finally:
            sub.close()
            pub.close()

    def close(self) -> None:
        for cl in self._clients:
            cl.close()
        self.ctx.destroy(linger=0)


def _run_session(cfg: KhazadConfig, timeout_s: float, retries: int, job: Any) -> Any:
    async def main() -> Any:
        session = _Session(cfg, timeout_s, retries)
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
    status: str = "not_sent"  # confirmed | acknowledged | broadcast | unconfirmed | unreachable | rejected | error
    detail: str = ""
    reply: Any = None

    def to_dict(self) -> dict[str, Any]:
        reply = msgspec.to_builtins(self.reply) if self.reply is not None else None
        return {"target": self.target, "ok": self.ok, "status": self.status, "detail": self.detail, "reply": reply}


async def _request_leg(target: str, call: Any) -> Leg:
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
            leg.detail = (f"{reply.trading_state} (epoch {reply.epoch}), cancelled {reply.cancelled}, "
                          f"remaining {reply.remaining}{' - ' + reply.detail if reply.detail else ''}")
        else:
            leg.detail = getattr(reply, "detail", "") if isinstance(getattr(reply, "detail", ""), str) else ""
    return leg


async def _broadcast_leg(session: _Session, topic: str, body: Any, match: Any,
                         timeout_s: float = BROADCAST_TIMEOUT_S) -> Leg:
    leg = Leg(f"bus:{topic}")
    try:
        await session.broadcast(topic, body, match, timeout_s)
        leg.ok, leg.status, leg.detail = True, "broadcast", "seen back through the proxy"
    except TimeoutError as exc:
        leg.status, leg.detail = "unconfirmed", f"{exc} (is the proxy running?)"
    except Exception as exc:  # see _request_leg
        leg.status, leg.detail = "error", f"{type(exc).__name__}: {exc}"
    return leg


# ---------------------------------------------------------------------------------------------------------------
# kill / resume
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class KillOutcome:
    """What ``khazad kill`` achieved, leg by leg, and the exit code that follows from the gateway leg."""

    command: Kill
    gateway: Leg
    risk: Leg
    bus: Leg
    exit_code: int = EXIT_UNREACHABLE
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"command": msgspec.to_builtins(self.command), "confirmed": self.exit_code == EXIT_OK,
                "exit_code": self.exit_code, "elapsed_s": round(self.elapsed_s, 3), "gateway": self.gateway.to_dict(),
                "risk": self.risk.to_dict(), "bus": self.bus.to_dict(), "warnings": self.warnings}


def _judge_kill(gateway: Leg) -> int:
    """Exit code from the gateway's answer; marks the leg confirmed/unconfirmed."""
    if gateway.status in ("unreachable", "error", "not_sent"):
        return EXIT_UNREACHABLE
    if gateway.status == "rejected":
        return EXIT_REFUSED
    report = gateway.reply
    if not isinstance(report, CancelReport):
        gateway.ok, gateway.status = False, "unconfirmed"
        gateway.detail = f"unexpected reply {tag_of(type(report))} (expected cancel_report)"
        return EXIT_NOT_CONFIRMED
    if report.confirmed and report.remaining == 0:
        gateway.status = "confirmed"
        gateway.detail = (f"{report.trading_state} (epoch {report.epoch}), cancelled {report.cancelled}, "
                          f"remaining 0, in {report.elapsed_ms:.0f} ms")
        return EXIT_OK
    gateway.ok, gateway.status = False, "unconfirmed"
    refs = ", ".join(report.remaining_order_refs[:20]) + (" ..." if len(report.remaining_order_refs) > 20 else "")
    gateway.detail = (f"{report.trading_state} (epoch {report.epoch}), cancelled {report.cancelled}, "
                      f"REMAINING {report.remaining}{': ' + refs if refs else ''}"
                      f"{' - ' + report.detail if report.detail else ''}")
    return EXIT_NOT_CONFIRMED


def send_kill(cfg: KhazadConfig, *, scope: str = "all", reason: str, timeout_s: float | None = None,
              retries: int = KILL_RETRIES, broadcast_timeout_s: float | None = None,
              kill_origin: str | None = None) -> KillOutcome:
    """Send one kill (gateway + risk + bus, concurrently) and judge it. Used by ``khazad kill``; usable from
    scripts. ``timeout_s`` is per attempt (default: the gateway's kill verification bound plus the request
    timeout, since the gateway answers only after it has verified that nothing is working). The whole call
    returns within ``timeout_s * (retries + 1)`` plus backoff (the bus leg is bounded by the same budget, at
    most :data:`BROADCAST_TIMEOUT_S`, at least 1 s)."""
    kill = Kill(kill_id=uuid.uuid4().hex, scope=scope, reason=reason, origin=kill_origin or origin())
    kill = validate(kill)  # schema check as the gateway will do it: a bad scope -> DecodeError (a ValueError)
    per_attempt = timeout_s if timeout_s is not None else cfg.gateway.kill_verify_timeout_s + cfg.bus.request_timeout_s
    if broadcast_timeout_s is None:
        broadcast_timeout_s = min(BROADCAST_TIMEOUT_S, max(1.0, per_attempt * (retries + 1)))
    start = time.monotonic()

    async def job(session: _Session) -> KillOutcome:
        gateway, risk, bus = await asyncio.gather(
            _request_leg("gateway", session.client("gateway").call(kill)),
            # the governor halts, then forwards an emergency cancel to the gateway and reports on it: same budget
            _request_leg("risk", session.client("risk").call(kill)),
            _broadcast_leg(session, KILL_TOPIC, kill,
                           lambda b: isinstance(b, Kill) and b.kill_id == kill.kill_id, broadcast_timeout_s),
        )
        return KillOutcome(command=kill, gateway=gateway, risk=risk, bus=bus)

    outcome: KillOutcome = _run_session(cfg, per_attempt, retries, job)
    outcome.elapsed_s = time.monotonic() - start
    outcome.exit_code = _judge_kill(outcome.gateway)
    if not outcome.risk.ok:
        outcome.warnings.append(f"risk governor did not acknowledge ({outcome.risk.status}: {outcome.risk.detail})")
    if not outcome.bus.ok:
        outcome.warnings.append(f"bus broadcast not confirmed ({outcome.bus.detail})")
    return outcome


def _print_legs(title: str, legs: list[Leg], ok_style: str = "green") -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("target")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for leg in legs:
        style = ok_style if leg.ok else "bold red"
        table.add_row(leg.target, f"[{style}]{leg.status.upper()}[/]", leg.detail)
    _console().print(table)


def _cmd_kill(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)
    except ConfigError as exc:
        _err(f"khazad kill: configuration error: {exc}\nKILL NOT SENT.")
        return EXIT_CONFIG
    try:
        outcome = send_kill(cfg, scope=args.scope, reason=args.reason, timeout_s=args.timeout, retries=args.retries)
    except ValueError as exc:
        _err(f"khazad kill: invalid command: {exc}\nKILL NOT SENT.")
        return EXIT_REFUSED
    if args.json:
        _print_json(outcome.to_dict())
    else:
        k = outcome.command
        _print_legs(f"KILL scope={k.scope} kill_id={k.kill_id} ({outcome.elapsed_s:.2f}s)",
                    [outcome.gateway, outcome.risk, outcome.bus])
    for w in outcome.warnings:
        _err(f"warning: {w}")
    if outcome.exit_code == EXIT_OK:
        if not args.json:
            _console().print("[bold green]KILL CONFIRMED[/]: trading halted, no working orders in scope "
                             f"{outcome.command.scope}. Resume with `khazad resume --scope {outcome.command.scope} "
                             "--reason ...`.")
    else:
        why = {EXIT_UNREACHABLE: "the gateway did not answer (unreachable or down)",
               EXIT_NOT_CONFIRMED: "the gateway could not confirm that nothing is working",
               EXIT_REFUSED: "the gateway refused the command"}[outcome.exit_code]
        _err(f"KILL NOT CONFIRMED: {why}: {outcome.gateway.detail}\n"
             "Orders may still be working at IB. Re-run `khazad kill`, check `khazad orders` and `khazad status`, "
             "and if the gateway stays unreachable cancel in TWS / IB Gateway directly (Global Cancel).")
    return outcome.exit_code


@dataclass
class ResumeOutcome:
    command: Resume
    gateway: Leg
    risk: Leg
    bus: Leg
    exit_code: int = EXIT_UNREACHABLE

    def to_dict(self) -> dict[str, Any]:
        return {"command": msgspec.to_builtins(self.command), "resumed": self.exit_code == EXIT_OK,
                "exit_code": self.exit_code, "gateway": self.gateway.to_dict(), "risk": self.risk.to_dict(),
                "bus": self.bus.to_dict()}


def send_resume(cfg: KhazadConfig, *, scope: str = "all", reason: str, timeout_s: float | None = None,
                retries: int | None = None, resume_origin: str | None = None) -> ResumeOutcome:
    """Send one resume to the gateway and the risk governor (both must acknowledge: either alone keeps refusing
    orders) and broadcast it on ``control.resume``."""
    cmd = Resume(scope=scope, reason=reason, origin=resume_origin or origin())
    cmd = validate(cmd)
    per_attempt = timeout_s if timeout_s is not None else cfg.bus.request_timeout_s
    tries = cfg.bus.request_retries if retries is None else retries
    async def job(session: _Session) -> ResumeOutcome:
        gateway, risk, bus = await asyncio.gather(
            _request_leg("gateway", session.client("gateway").call(cmd)),
            _request_leg("risk", session.client("risk").call(cmd)),
            # Resume has no id: our own copy is the one equal to what we sent
            _broadcast_leg(session, RESUME_TOPIC, cmd, lambda b: isinstance(b, Resume) and b == cmd,
                           min(BROADCAST_TIMEOUT_S, max(1.0, per_attempt * (tries + 1)))),
        )
        return ResumeOutcome(command=cmd, gateway=gateway, risk=risk, bus=bus)

    outcome: ResumeOutcome = _run_session(cfg, per_attempt, tries, job)
    legs = (outcome.gateway, outcome.risk)
    if all(leg.ok for leg in legs):
        outcome.exit_code = EXIT_OK
    elif any(leg.status == "rejected" for leg in legs):
        outcome.exit_code = EXIT_REFUSED
    else:
        outcome.exit_code = EXIT_UNREACHABLE
    return outcome


def _cmd_resume(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)
    except ConfigError as exc:
        _err(f"khazad resume: configuration error: {exc}")
        return EXIT_CONFIG
    try:
        outcome = send_resume(cfg, scope=args.scope, reason=args.reason, timeout_s=args.timeout)
    except ValueError as exc:
        _err(f"khazad resume: invalid command: {exc}")
        return EXIT_REFUSED
    if args.json:
        _print_json(outcome.to_dict())
    else:
        _print_legs(f"RESUME scope={outcome.command.scope}", [outcome.gateway, outcome.risk, outcome.bus])
    if not outcome.bus.ok:
        _err(f"warning: bus broadcast not confirmed ({outcome.bus.detail})")
    if outcome.exit_code == EXIT_OK:
        if not args.json:
            _console().print(f"[bold green]RESUMED[/] scope {outcome.command.scope}: the gateway and the risk "
                             "governor accept orders again.")
    else:
        failed = ", ".join(f"{leg.target} ({leg.status}: {leg.detail})" for leg in (outcome.gateway, outcome.risk)
                           if not leg.ok)
        _err(f"RESUME NOT CONFIRMED: {failed}. Trading stays halted where the resume did not arrive; re-run it.")
    return outcome.exit_code


# ---------------------------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StatusOutcome:
    source: str  # "monitor" | "direct"
    actors: list[ActorHealth]
    connection: str = ""
    trading_state: str = ""
    epoch: int = 0
    alerts: list[Any] = field(default_factory=list)
    gaps: int = 0
    rejects: int = 0
    unreachable: list[str] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.unreachable and all(a.alive for a in self.actors)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "healthy": self.healthy, "connection": self.connection,
                "trading_state": self.trading_state, "epoch": self.epoch,
                "actors": msgspec.to_builtins(self.actors), "alerts": msgspec.to_builtins(self.alerts),
                "gaps": self.gaps, "rejects": self.rejects, "unreachable": self.unreachable,
                "services": msgspec.to_builtins(self.services)}


async def _direct_status(session: _Session) -> StatusOutcome:
    """Ask every service itself (monitor down): GetStatus, else Ping; the proxy by a bus round trip."""

    async def ask(service: str) -> tuple[str, Any]:
        cl = session.client(service)
        try:
            reply = await cl.call(GetStatus())
            if isinstance(reply, Rejected):
                reply = await cl.call(Ping())
            return service, reply
        except RequestTimeout:
            return service, None

    async def proxy() -> tuple[str, Any]:
        try:
            await session.broadcast(None, timeout_s=session.timeout_s)  # handshake through the proxy
        except Exception:  # any failure of the probe means "unreachable"
            return "proxy", None
        return "proxy", Pong(actor="proxy")

    results = dict(await asyncio.gather(proxy(), *(ask(s) for s in STATUS_SERVICES)))
    out = StatusOutcome(source="direct", actors=[])
    for name in ("proxy", *STATUS_SERVICES):
        reply = results[name]
        if reply is None:
            out.unreachable.append(name)
            out.actors.append(ActorHealth(name=name, alive=False, state="UNREACHABLE"))
            continue
        out.services[name] = reply
        detail: dict[str, str] = {}
        state = getattr(reply, "state", "") or "RUNNING"
        if isinstance(reply, GatewayStatus):
            out.connection, out.trading_state, out.epoch = reply.connection, reply.trading_state, reply.epoch
            detail = {"mode": reply.mode, "connection": reply.connection, "open_orders": str(reply.open_orders),
                      "account": reply.account}
            state = "RUNNING"
        elif isinstance(reply, ServiceStatus):
            detail = dict(reply.detail)
        elif isinstance(reply, RiskStateReply):
            detail = {"global_state": reply.global_state}
        elif isinstance(reply, Rejected):
            state, detail = "ANSWERS", {"reply": f"{reply.code}: {reply.reason}"}
        out.actors.append(ActorHealth(name=name, alive=True, state=state, detail=detail))
    return out


def get_status(cfg: KhazadConfig, *, timeout_s: float | None = None, retries: int | None = None) -> StatusOutcome:
    """The monitor's system status, or (monitor down) what each service says about itself."""
    per_attempt = timeout_s if timeout_s is not None else cfg.bus.request_timeout_s
    tries = 0 if retries is None else retries

    async def job(session: _Session) -> StatusOutcome:
        # ask every service at the same time as the monitor, so a dead monitor costs no extra timeout
        direct = asyncio.create_task(_direct_status(session))
        try:
            reply = await session.client("monitor").call(GetSystemStatus())
        except RequestTimeout:
            reply = None
        if isinstance(reply, SystemStatusReply):
            direct.cancel()
            await asyncio.gather(direct, return_exceptions=True)
            return StatusOutcome(source="monitor", actors=list(reply.actors), connection=reply.connection,
                                 trading_state=reply.trading_state, epoch=reply.epoch, alerts=list(reply.alerts),
                                 gaps=reply.gaps, rejects=reply.rejects)
        return await direct

    return _run_session(cfg, per_attempt, tries, job)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)
    except ConfigError as exc:
        _err(f"khazad status: configuration error: {exc}")
        return EXIT_CONFIG
    st = get_status(cfg, timeout_s=args.timeout)
    if args.json:
        _print_json(st.to_dict())
        return EXIT_OK if st.healthy else EXIT_DEGRADED
    from rich.table import Table

    console = _console()
    if st.source != "monitor":
        _err("monitor unreachable: status below comes from each service directly")
    state_style = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "bold red"}.get(st.trading_state, "")
    conn_style = "green" if st.connection == "READY" else "bold red"
    console.print(f"trading: [{state_style or 'bold'}]{st.trading_state or '?'}[/] (epoch {st.epoch})   "
                  f"connection: [{conn_style}]{st.connection or '?'}[/]   source: {st.source}"
                  + (f"   gaps: {st.gaps}   rejects: {st.rejects}" if st.source == "monitor" else ""))
    table = Table(show_header=True, header_style="bold")
    for col in ("actor", "alive", "state", "pid", "last beat", "detail"):
        table.add_column(col, overflow="fold")
    for a in st.actors:
        alive = "[green]yes[/]" if a.alive else "[bold red]NO[/]"
        beat = "" if a.last_beat_age_s is None else f"{a.last_beat_age_s:.1f}s ago"
        table.add_row(a.name, alive, a.state, str(a.pid or ""), beat,
                      ", ".join(f"{k}={v}" for k, v in sorted(a.detail.items())))
    console.print(table)
    if st.alerts:
        alerts = Table(title="recent alerts", show_header=True, header_style="bold")
        for col in ("severity", "kind", "source", "message"):
            alerts.add_column(col, overflow="fold")
        for al in st.alerts[-10:]:
            alerts.add_row(al.severity, al.kind, al.source, al.message)
        console.print(alerts)
    return EXIT_OK if st.healthy else EXIT_DEGRADED


# ---------------------------------------------------------------------------------------------------------------
# orders / positions / account
# ---------------------------------------------------------------------------------------------------------------


def _query(cfg: KhazadConfig, service: str, body: Any, timeout_s: float | None) -> Any:
    per_attempt = timeout_s if timeout_s is not None else cfg.bus.request_timeout_s

    async def job(session: _Session) -> Any:
        return await session.client(service).call(body)

    return _run_session(cfg, per_attempt, cfg.bus.request_retries, job)


def _query_cmd(args: argparse.Namespace, service: str, body: Any, expect: type) -> tuple[int, Any]:
    """Run one query; returns (exit code, reply). Prints the failure itself."""
    name = args.command
    try:
        cfg = _load(args)
    except ConfigError as exc:
        _err(f"khazad {name}: configuration error: {exc}")
        return EXIT_CONFIG, None
    try:
        reply = _query(cfg, service, body, args.timeout)
    except RequestTimeout as exc:
        _err(f"khazad {name}: {service} unreachable: {exc}")
        return EXIT_UNREACHABLE, None
    if isinstance(reply, Rejected):
        _err(f"khazad {name}: {service} refused: {reply.code}: {reply.reason}")
        return EXIT_REFUSED, reply
    if not isinstance(reply, expect):
        _err(f"khazad {name}: unexpected reply {tag_of(type(reply))} from {service}")
        return EXIT_REFUSED, reply
    return EXIT_OK, reply


def _price(o: OrderView) -> str:
    spec = o.spec
    parts = []
    if spec.limit_price is not None:
        parts.append(f"L {spec.limit_price:g}")
    if spec.stop_price is not None:
        parts.append(f"S {spec.stop_price:g}")
    return " ".join(parts)


def orders_table(orders: list[OrderView], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in ("strategy", "client_order_id", "symbol", "side", "qty", "type", "price", "tif", "status", "filled",
                "avg", "ib id", "perm id", "updated", "reason"):
        table.add_column(col, overflow="fold")
    for o in orders:
        s = o.spec
        style = "green" if o.is_live else ("dim" if o.is_done else "yellow")
        table.add_row(s.strategy_id, s.client_order_id, s.instrument.symbol, s.side, _qty(s.quantity), s.order_type,
                      _price(o), s.tif, f"[{style}]{o.status}[/]", _qty(o.filled),
                      _num(o.avg_fill_price, "{:,.4g}") if o.filled else "", str(o.ib_order_id or ""),
                      str(o.perm_id or ""), _time(o.updated_wall_ns or o.created_wall_ns), o.reason)
    return table


def _cmd_orders(args: argparse.Namespace) -> int:
    flt = "all" if args.all else ("today" if args.today else "open")
    try:
        body = validate(ListOrders(strategy_id=args.strategy, symbol=args.symbol, filter=flt))
    except ValueError as exc:
        _err(f"khazad orders: invalid filter: {exc}")
        return EXIT_REFUSED
    code, reply = _query_cmd(args, "orders", body, OrderListReply)
    if code != EXIT_OK:
        return code
    if args.json:
        _print_json({"filter": flt, "strategy": args.strategy, "symbol": args.symbol, "orders": reply.orders})
    else:
        what = [flt] + ([f"strategy {args.strategy}"] if args.strategy else []) + \
               ([f"symbol {args.symbol}"] if args.symbol else [])
        _console().print(orders_table(reply.orders, f"orders ({', '.join(what)}): {len(reply.orders)}"))
    return EXIT_OK


def positions_table(positions: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in ("account", "symbol", "type", "currency", "quantity", "avg cost", "mkt price", "mkt value",
                "unrealized", "realized"):
        table.add_column(col, justify="right" if col not in ("account", "symbol", "type", "currency") else "left")
    for p in positions:
        table.add_row(p.account, p.instrument.symbol, p.instrument.sec_type, p.instrument.currency, _qty(p.quantity),
                      _num(p.avg_cost, "{:,.4f}"), _num(p.market_price, "{:,.4f}"), _num(p.market_value),
                      _num(p.unrealized_pnl), _num(p.realized_pnl))
    return table


def _cmd_positions(args: argparse.Namespace) -> int:
    try:
        body = validate(GetPositions(strategy_id=args.strategy))
    except ValueError as exc:
        _err(f"khazad positions: invalid strategy: {exc}")
        return EXIT_REFUSED
    code, reply = _query_cmd(args, "portfolio", body, PositionsReply)
    if code != EXIT_OK:
        return code
    if args.json:
        _print_json({"strategy": args.strategy, "positions": reply.positions})
    else:
        title = f"positions{' of ' + args.strategy if args.strategy else ''}: {len(reply.positions)}"
        _console().print(positions_table(reply.positions, title))
    return EXIT_OK


def _cmd_account(args: argparse.Namespace) -> int:
    code, reply = _query_cmd(args, "portfolio", GetAccount(), AccountReply)
    if code != EXIT_OK:
        return code
    snap = reply.snapshot
    if args.json:
        _print_json({"account": snap})
        return EXIT_OK
    from rich.table import Table

    console = _console()
    summary = Table(title=f"account {snap.account or '?'} ({snap.currency or '?'})", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", justify="right")
    for key, value in (("net liquidation", snap.net_liquidation), ("total cash", snap.total_cash),
                       ("buying power", snap.buying_power), ("realized P&L", snap.realized_pnl),
                       ("unrealized P&L", snap.unrealized_pnl)):
        summary.add_row(key, _num(value))
    console.print(summary)
    if snap.strategy_pnl or snap.strategy_realized:
        per = Table(title="per strategy", show_header=True, header_style="bold")
        per.add_column("strategy")
        per.add_column("P&L", justify="right")
        per.add_column("realized", justify="right")
        for sid in sorted(set(snap.strategy_pnl) | set(snap.strategy_realized)):
            per.add_row(sid, _num(snap.strategy_pnl.get(sid)), _num(snap.strategy_realized.get(sid)))
        console.print(per)
    if snap.positions:
        console.print(positions_table(snap.positions, f"positions: {len(snap.positions)}"))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# sim, registration
# ---------------------------------------------------------------------------------------------------------------


def _sim(args: argparse.Namespace) -> int:
    from sim.__main__ import main as sim_main

    return sim_main(list(args.sim_args))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _common(p: argparse.ArgumentParser, timeout_help: str) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document (stable keys) instead of tables")
    p.add_argument("--timeout", type=_positive, default=None, metavar="SECONDS", help=timeout_help)


def register(sub: argparse._SubParsersAction) -> None:
    # prefix_chars that never occur: every argument after `sim` (options included) goes to the simulator as is
    p = sub.add_parser("sim", help="run the TWS API simulator (same options as `python -m sim`)", add_help=False,
                       prefix_chars="\x00")
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_sim)

    scope_help = "all (default) | strategy:<id> | symbol:<symbol>"
    p = sub.add_parser(
        "kill", help="KILL SWITCH: halt trading and cancel every working order (gateway-confirmed)",
        description="Halt trading in SCOPE and cancel every working order in it. Sent straight to the gateway "
                    "(acknowledged with a cancel report), to the risk governor, and broadcast on control.kill. "
                    "Exit codes: 0 confirmed (halted, nothing working), 2 gateway unreachable, 3 orders remain / "
                    "not verified, 4 refused, 78 config error.")
    p.add_argument("--scope", default="all", help=scope_help)
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    p.add_argument("--retries", type=_non_negative_int, default=KILL_RETRIES,
                   help=f"gateway retries, same request id (default {KILL_RETRIES})")
    _common(p, "per-attempt wait for the gateway's confirmation (default: gateway.kill_verify_timeout_s + "
               "bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_kill)

    p = sub.add_parser("resume", help="resume trading after a kill (gateway and risk governor)",
                       description="Return SCOPE to ACTIVE at the gateway and the risk governor and broadcast "
                                   "control.resume. Exit 0 only if both acknowledged.")
    p.add_argument("--scope", default="all", help=scope_help)
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    _common(p, "per-attempt request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_resume)

    p = sub.add_parser("status", help="actors, IB connection and trading state",
                       description="Ask the monitor for the system status; when it is down, ask every service "
                                   "directly and mark what could not be reached. Exit 1 when something is down.")
    _common(p, "per-service request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("orders", help="orders known to the order manager (open by default)")
    p.add_argument("--strategy", help="only this strategy")
    p.add_argument("--symbol", help="only this symbol")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every order, not only working ones")
    which.add_argument("--today", action="store_true", help="orders created today")
    _common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_orders)

    p = sub.add_parser("positions", help="positions from the portfolio")
    p.add_argument("--strategy", help="only this strategy's positions")
    _common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_positions)

    p = sub.add_parser("account", help="account summary and per-strategy P&L from the portfolio")
    _common(p, "request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_account)
