"""``khazad kill``: the kill switch, built to be trusted.

The ``Kill`` goes straight to the gateway as an acknowledged request (the reply is a ``CancelReport``), to the risk
governor (so the policy side halts even if the bus copy is lost) and on the bus (``control.kill``, confirmed by
seeing it come back through the proxy). All three legs run at the same time, each bounded, and each is reported
with its own state. The kill answers when the gateway has: the other legs get at most :data:`STRAGGLER_GRACE_S`
more, then show as ``pending`` (a SIGSTOPped governor cannot hold the answer back). The exit code says what the
gateway confirmed (:mod:`cli.exit_codes`): 0 confirmed (halted, nothing working; a pending or failed risk or bus
leg is a warning, not a failure: the halt at the gateway is what stops orders reaching IB), 2 unreachable, 3 not
confirmed, 4 refused, 78 config.
(argparse also exits 2 on a usage error; it prints the usage, the kill prints ``KILL NOT CONFIRMED``.)

:func:`send_kill` is the same kill for scripts, the dashboard (``khazad top``), the chaos tests and the benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus import topics
from bus.codec import validate
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.messages import CancelReport, Kill, Rejected, tag_of
from cli.args import SCOPE_HELP, add_common, non_negative_int
from cli.exit_codes import EXIT_NOT_CONFIRMED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from cli.output import err, new_console, print_json, print_legs
from cli.session import BROADCAST_TIMEOUT_S, Leg, Session, broadcast_leg, connected_leg, load, origin, run_session

#: Retries of the kill request to the gateway (same request id: the gateway runs the kill once).
KILL_RETRIES = 1
#: Once the gateway has answered, the other legs (risk, broadcast) get at most this long before the kill answers
#: with them as ``pending``: the halt at the gateway is what makes the kill, a stuck governor must not delay it.
STRAGGLER_GRACE_S = 1.0
#: Each request leg first waits this long at most for its own connection (CURVE handshake, the service's ZAP check)
#: and then sends: the kill is stamped when it can leave. A service that cannot complete a handshake by then (a
#: SIGSTOPped governor) does not hold its leg back: the kill is queued and goes when the connection comes up.
KILL_CONNECT_WAIT_S = 0.5


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
        return {
            "command": msgspec.to_builtins(self.command),
            "confirmed": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "elapsed_s": round(self.elapsed_s, 3),
            "gateway": self.gateway.to_dict(),
            "risk": self.risk.to_dict(),
            "bus": self.bus.to_dict(),
            "warnings": self.warnings,
        }


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
        gateway.detail = (
            f"{report.trading_state} (epoch {report.epoch}), cancelled {report.cancelled}, "
            f"remaining 0, in {report.elapsed_ms:.0f} ms"
        )
        return EXIT_OK
    gateway.ok, gateway.status = False, "unconfirmed"
    refs = ", ".join(report.remaining_order_refs[:20]) + (" ..." if len(report.remaining_order_refs) > 20 else "")
    gateway.detail = (
        f"{report.trading_state} (epoch {report.epoch}), cancelled {report.cancelled}, "
        f"REMAINING {report.remaining}{': ' + refs if refs else ''}"
        f"{' - ' + report.detail if report.detail else ''}"
    )
    return EXIT_NOT_CONFIRMED


def send_kill(
    cfg: KhazadConfig,
    *,
    scope: str = "all",
    reason: str,
    timeout_s: float | None = None,
    retries: int = KILL_RETRIES,
    broadcast_timeout_s: float | None = None,
    kill_origin: str | None = None,
    keep_protective: bool = False,
) -> KillOutcome:
    """Send one kill (gateway + risk + bus, concurrently) and judge it. Used by ``khazad kill``; usable from
    scripts. ``timeout_s`` is per attempt (default: the gateway's kill verification bound plus the request
    timeout, since the gateway answers only after it has verified that nothing is working). The whole call
    returns within ``timeout_s * (retries + 1)`` plus backoff and :data:`KILL_CONNECT_WAIT_S` (the bus leg is
    bounded by the same budget, at most :data:`BROADCAST_TIMEOUT_S`, at least 1 s). ``keep_protective``: spare the
    stops that protect open positions at IB (``--keep-protective``)."""
    kill = Kill(
        kill_id=uuid.uuid4().hex,
        scope=scope,
        reason=reason,
        origin=kill_origin or origin(),
        keep_protective=keep_protective,
    )
    kill = validate(kill)  # schema check as the gateway will do it: a bad scope -> DecodeError (a ValueError)
    per_attempt = timeout_s if timeout_s is not None else cfg.gateway.kill_verify_timeout_s + cfg.bus.request_timeout_s
    if broadcast_timeout_s is None:
        broadcast_timeout_s = min(BROADCAST_TIMEOUT_S, max(1.0, per_attempt * (retries + 1)))
    start = time.monotonic()

    async def job(session: Session) -> KillOutcome:
        # every leg dials at once; each sends as soon as its own connection is up (see KILL_CONNECT_WAIT_S)
        gateway_leg = asyncio.create_task(
            connected_leg("gateway", session.client("gateway", watch_handshake=True), kill, KILL_CONNECT_WAIT_S)
        )
        others = {
            # the governor halts, then forwards an emergency cancel to the gateway and reports on it: same budget
            "risk": asyncio.create_task(
                connected_leg("risk", session.client("risk", watch_handshake=True), kill, KILL_CONNECT_WAIT_S)
            ),
            f"bus:{topics.KILL}": asyncio.create_task(
                broadcast_leg(
                    session,
                    topics.KILL,
                    kill,
                    lambda b: isinstance(b, Kill) and b.kill_id == kill.kill_id,
                    broadcast_timeout_s,
                )
            ),
        }
        gateway = await gateway_leg
        # the gateway's answer is the kill's answer: a stuck leg gets at most STRAGGLER_GRACE_S more, then it is
        # reported pending (its request stays valid: the governor still halts when it runs again)
        await asyncio.wait(others.values(), timeout=STRAGGLER_GRACE_S)
        legs: dict[str, Leg] = {}
        for target, task in others.items():
            if task.done():
                legs[target] = task.result()
            else:
                task.cancel()
                legs[target] = Leg(
                    target,
                    status="pending",
                    detail=f"no answer within {STRAGGLER_GRACE_S:g}s of the gateway's (the command stays sent)",
                )
        await asyncio.gather(*others.values(), return_exceptions=True)
        return KillOutcome(command=kill, gateway=gateway, risk=legs["risk"], bus=legs[f"bus:{topics.KILL}"])

    outcome: KillOutcome = run_session(cfg, per_attempt, retries, job)
    outcome.elapsed_s = time.monotonic() - start
    outcome.exit_code = _judge_kill(outcome.gateway)
    if not outcome.risk.ok:
        outcome.warnings.append(f"risk governor did not acknowledge ({outcome.risk.status}: {outcome.risk.detail})")
    if not outcome.bus.ok:
        outcome.warnings.append(f"bus broadcast not confirmed ({outcome.bus.detail})")
    return outcome


def _cmd_kill(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
    except ConfigError as exc:
        err(f"khazad kill: configuration error: {exc}\nKILL NOT SENT.")
        return EXIT_CONFIG
    try:
        outcome = send_kill(
            cfg,
            scope=args.scope,
            reason=args.reason,
            timeout_s=args.timeout,
            retries=args.retries,
            keep_protective=args.keep_protective,
        )
    except ValueError as exc:
        err(f"khazad kill: invalid command: {exc}\nKILL NOT SENT.")
        return EXIT_REFUSED
    if args.json:
        print_json(outcome.to_dict())
    else:
        k = outcome.command
        print_legs(
            f"KILL scope={k.scope} kill_id={k.kill_id} ({outcome.elapsed_s:.2f}s)",
            [outcome.gateway, outcome.risk, outcome.bus],
        )
    for w in outcome.warnings:
        err(f"warning: {w}")
    if outcome.exit_code == EXIT_OK:
        if not args.json:
            new_console().print(
                "[bold green]KILL CONFIRMED[/]: trading halted, no working orders in scope "
                f"{outcome.command.scope}. Resume with `khazad resume --scope {outcome.command.scope} "
                "--reason ...`."
            )
    else:
        why = {
            EXIT_UNREACHABLE: "the gateway did not answer (unreachable or down)",
            EXIT_NOT_CONFIRMED: "the gateway could not confirm that nothing is working",
            EXIT_REFUSED: "the gateway refused the command",
        }[outcome.exit_code]
        reply = outcome.gateway.reply
        if isinstance(reply, Rejected) and reply.code == "unauthorized":
            advice = (
                "This key is not authorized to kill: use the operator's key (see `khazad keys list`). "
                "Nothing was halted by this command."
            )
        else:
            advice = (
                "Orders may still be working at IB. Re-run `khazad kill`, check `khazad orders` and `khazad status`, "
                "and if the gateway stays unreachable cancel in TWS / IB Gateway directly (Global Cancel)."
            )
        err(f"KILL NOT CONFIRMED: {why}: {outcome.gateway.detail}\n{advice}")
    return outcome.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kill",
        help="KILL SWITCH: halt trading and cancel every working order (gateway-confirmed)",
        description="Halt trading in SCOPE and cancel every working order in it. Sent straight to the gateway "
        f"(acknowledged with a cancel report), to the risk governor, and broadcast on {topics.KILL}. "
        "Exit codes: 0 confirmed (halted, nothing working), 2 gateway unreachable, 3 orders remain / "
        "not verified, 4 refused, 78 config error.",
    )
    p.add_argument("--scope", default="all", help=SCOPE_HELP)
    p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    p.add_argument(
        "--keep-protective",
        action="store_true",
        help="keep the stop orders (STP, STP LMT, TRAIL, TRAIL LIMIT) that protect open positions at IB; "
        "everything else is cancelled",
    )
    p.add_argument(
        "--retries",
        type=non_negative_int,
        default=KILL_RETRIES,
        help=f"gateway retries, same request id (default {KILL_RETRIES})",
    )
    add_common(
        p,
        "per-attempt wait for the gateway's confirmation (default: gateway.kill_verify_timeout_s + "
        "bus.request_timeout_s)",
    )
    p.set_defaults(handler=_cmd_kill)
