"""``khazad resume``: return a scope to ACTIVE at the gateway and the risk governor (both must acknowledge: either
alone keeps refusing orders) and broadcast it on ``control.resume``."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec

from bus import topics
from bus.codec import validate
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.messages import Resume
from cli.args import SCOPE_HELP, add_common
from cli.exit_codes import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from cli.output import err, new_console, print_json, print_legs
from cli.session import BROADCAST_TIMEOUT_S, Leg, Session, broadcast_leg, load, origin, request_leg, run_session


@dataclass
class ResumeOutcome:
    """What ``khazad resume`` achieved, leg by leg; exit 0 only when the gateway and the risk governor both
    acknowledged."""

    command: Resume
    gateway: Leg
    risk: Leg
    bus: Leg
    exit_code: int = EXIT_UNREACHABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": msgspec.to_builtins(self.command),
            "resumed": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "gateway": self.gateway.to_dict(),
            "risk": self.risk.to_dict(),
            "bus": self.bus.to_dict(),
        }


def send_resume(
    cfg: KhazadConfig,
    *,
    scope: str = "all",
    reason: str,
    timeout_s: float | None = None,
    retries: int | None = None,
    resume_origin: str | None = None,
) -> ResumeOutcome:
    """Send one resume to the gateway and the risk governor (both must acknowledge: either alone keeps refusing
    orders) and broadcast it on ``control.resume``."""
    cmd = Resume(scope=scope, reason=reason, origin=resume_origin or origin())
    cmd = validate(cmd)
    per_attempt = timeout_s if timeout_s is not None else cfg.bus.request_timeout_s
    tries = cfg.bus.request_retries if retries is None else retries

    async def job(session: Session) -> ResumeOutcome:
        gateway, risk, bus = await asyncio.gather(
            request_leg("gateway", session.client("gateway").call(cmd)),
            request_leg("risk", session.client("risk").call(cmd)),
            # Resume has no id: our own copy is the one equal to what we sent
            broadcast_leg(
                session,
                topics.RESUME,
                cmd,
                lambda b: isinstance(b, Resume) and b == cmd,
                min(BROADCAST_TIMEOUT_S, max(1.0, per_attempt * (tries + 1))),
            ),
        )
        return ResumeOutcome(command=cmd, gateway=gateway, risk=risk, bus=bus)

    outcome: ResumeOutcome = run_session(cfg, per_attempt, tries, job)
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
        cfg = load(args)
    except ConfigError as exc:
        err(f"khazad resume: configuration error: {exc}")
        return EXIT_CONFIG
    try:
        outcome = send_resume(cfg, scope=args.scope, reason=args.reason, timeout_s=args.timeout)
    except ValueError as exc:
        err(f"khazad resume: invalid command: {exc}")
        return EXIT_REFUSED
    if args.json:
        print_json(outcome.to_dict())
    else:
        print_legs(f"RESUME scope={outcome.command.scope}", [outcome.gateway, outcome.risk, outcome.bus])
    if not outcome.bus.ok:
        err(f"warning: bus broadcast not confirmed ({outcome.bus.detail})")
    if outcome.exit_code == EXIT_OK:
        if not args.json:
            new_console().print(
                f"[bold green]RESUMED[/] scope {outcome.command.scope}: the gateway and the risk "
                "governor accept orders again."
            )
    else:
        failed = ", ".join(
            f"{leg.target} ({leg.status}: {leg.detail})" for leg in (outcome.gateway, outcome.risk) if not leg.ok
        )
        err(f"RESUME NOT CONFIRMED: {failed}. Trading stays halted where the resume did not arrive; re-run it.")
    return outcome.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resume",
        help="resume trading after a kill (gateway and risk governor)",
        description="Return SCOPE to ACTIVE at the gateway and the risk governor and broadcast "
        f"{topics.RESUME}. Exit 0 only if both acknowledged.",
    )
    p.add_argument("--scope", default="all", help=SCOPE_HELP)
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    add_common(p, "per-attempt request timeout (default bus.request_timeout_s)")
    p.set_defaults(handler=_cmd_resume)
