"""``khazad status``: the monitor's system status or, when the monitor is down, what each service says about itself
(every service of :data:`bus.registry.SERVICES`, and the proxy by a bus round trip). Exit 1 when something is
down or degraded: an actor not alive (an expected actor that stopped cleanly, LEFT, included: it should be
running), or one whose service is saturated (DEGRADED: it refuses some callers for load). A strategy that left
cleanly does not count."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus import registry
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.messages import (
    DEGRADED_STATE,
    LEFT_STATE,
    ActorHealth,
    GatewayStatus,
    GetStatus,
    GetSystemStatus,
    Ping,
    Pong,
    Rejected,
    RiskStateReply,
    ServiceStatus,
    SystemStatusReply,
)
from bus.retry import RequestTimeout
from cli.args import add_common
from cli.exit_codes import EXIT_DEGRADED, EXIT_OK
from cli.output import err, new_console, print_json
from cli.session import Session, load, run_session

#: Services ``status`` asks directly when the monitor does not answer (every actor that serves requests).
STATUS_SERVICES = registry.SERVICE_NAMES


def actor_ok(a: ActorHealth) -> bool:
    """Whether one actor's health leaves the system healthy (see :attr:`StatusOutcome.healthy`)."""
    if a.alive:
        return a.state != DEGRADED_STATE
    return a.state == LEFT_STATE and not a.expected


@dataclass
class StatusOutcome:
    """The system's status as ``khazad status`` shows it: the monitor's view, or each service's own answer."""

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
        """Nothing unreachable, every actor alive and not saturated; a peer that is not expected (a strategy) and
        left cleanly is no failure, an expected actor that left is down (it should be running)."""
        return not self.unreachable and all(actor_ok(a) for a in self.actors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "healthy": self.healthy,
            "connection": self.connection,
            "trading_state": self.trading_state,
            "epoch": self.epoch,
            "actors": msgspec.to_builtins(self.actors),
            "alerts": msgspec.to_builtins(self.alerts),
            "gaps": self.gaps,
            "rejects": self.rejects,
            "unreachable": self.unreachable,
            "services": msgspec.to_builtins(self.services),
        }


async def _direct_status(session: Session) -> StatusOutcome:
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
            # the gateway's latch: shown when the risk governor (the trading states' authority) does not answer,
            # and always when it is HALTED (it refuses orders whatever the governor says); its counter is not the
            # trading epoch
            out.connection = reply.connection
            if not out.trading_state or reply.trading_state == "HALTED":
                out.trading_state = reply.trading_state
            detail = {
                "mode": reply.mode,
                "connection": reply.connection,
                "open_orders": str(reply.open_orders),
                "account": reply.account,
            }
            state = "RUNNING"
        elif isinstance(reply, ServiceStatus):
            detail = dict(reply.detail)
            if name == registry.RISK.name and detail.get("state"):
                if out.trading_state != "HALTED":
                    out.trading_state = detail["state"]
                out.epoch = int(detail.get("epoch", "0") or 0)
            if detail.get("saturated"):
                state = DEGRADED_STATE
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

    async def job(session: Session) -> StatusOutcome:
        # ask every service at the same time as the monitor, so a dead monitor costs no extra timeout
        direct = asyncio.create_task(_direct_status(session))
        try:
            reply = await session.client("monitor").call(GetSystemStatus())
        except RequestTimeout:
            reply = None
        if isinstance(reply, SystemStatusReply):
            direct.cancel()
            await asyncio.gather(direct, return_exceptions=True)
            return StatusOutcome(
                source="monitor",
                actors=list(reply.actors),
                connection=reply.connection,
                trading_state=reply.trading_state,
                epoch=reply.epoch,
                alerts=list(reply.alerts),
                gaps=reply.gaps,
                rejects=reply.rejects,
            )
        return await direct

    return run_session(cfg, per_attempt, tries, job)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
    except ConfigError as exc:
        err(f"khazad status: configuration error: {exc}")
        return EXIT_CONFIG
    st = get_status(cfg, timeout_s=args.timeout)
    if args.json:
        print_json(st.to_dict())
        return EXIT_OK if st.healthy else EXIT_DEGRADED
    from rich.table import Table

    console = new_console()
    if st.source != "monitor":
        err("monitor unreachable: status below comes from each service directly")
    state_style = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "bold red"}.get(st.trading_state, "")
    conn_style = "green" if st.connection == "READY" else "bold red"
    console.print(
        f"trading: [{state_style or 'bold'}]{st.trading_state or '?'}[/] (epoch {st.epoch})   "
        f"connection: [{conn_style}]{st.connection or '?'}[/]   source: {st.source}"
        + (f"   gaps: {st.gaps}   rejects: {st.rejects}" if st.source == "monitor" else "")
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("actor", "alive", "state", "pid", "last beat", "detail"):
        table.add_column(col, overflow="fold")
    for a in st.actors:
        alive = "[green]yes[/]" if a.alive else ("left" if actor_ok(a) else "[bold red]NO[/]")
        beat = "" if a.last_beat_age_s is None else f"{a.last_beat_age_s:.1f}s ago"
        table.add_row(
            a.name, alive, a.state, str(a.pid or ""), beat, ", ".join(f"{k}={v}" for k, v in sorted(a.detail.items()))
        )
    console.print(table)
    if st.alerts:
        alerts = Table(title="recent alerts", show_header=True, header_style="bold")
        for col in ("severity", "kind", "source", "message"):
            alerts.add_column(col, overflow="fold")
        for al in st.alerts[-10:]:
            alerts.add_row(al.severity, al.kind, al.source, al.message)
        console.print(alerts)
    return EXIT_OK if st.healthy else EXIT_DEGRADED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="actors, IB connection and trading state",
        description="Ask the monitor for the system status; when it is down, ask every service "
        "directly and mark what could not be reached. Exit 1 when something is down.",
    )
    add_common(p, "per-service request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_status)
