"""supervisord event listener: a program went FATAL (it kept failing to start and supervisord gave up).

Runs as ``[eventlistener:fatal_listener]`` with ``events=PROCESS_STATE_FATAL``. For each event it (1) logs it,
(2) writes an audit row, (3) hands it to the alert routes (``[[monitor.alert_routes]]``, ``alert_command``,
``alert_webhook``; delivered by the routes' worker threads) and
(4) publishes a critical :class:`~bus.messages.Alert` on ``alert.process_fatal`` so the monitor, ``khazad status``
and ``khazad top`` show it. Steps 1-3 do not depend on the bus, so a FATAL bus proxy is still reported.

Protocol (supervisord docs, "Event Listeners"): write ``READY\\n``; read one header line; read ``len`` bytes of
payload; answer ``RESULT 2\\nOK``. stdout belongs to that protocol: logs go to stderr only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zmq
from loguru import logger

from actors.monitor.alert_routes import AlertRouter
from actors.monitor.audit import ALERT, AuditLog
from bus import topics
from bus.codec import Stamper
from bus.config import ConfigError, KhazadConfig, load_config
from bus.log import setup_logging
from bus.messages import Alert
from bus.pubsub import Publisher

if TYPE_CHECKING:
    from bus.security import Security

PROCESS = "fatal_listener"
#: Bound for the bus handshake when publishing an alert (the proxy may be the program that died).
PUBLISH_READY_TIMEOUT_S = 2.0
#: At exit, how long queued alerts may still take to go out on the routes.
ROUTES_DRAIN_S = 10.0
#: How much of the FATAL program's log goes into the alert.
LOG_TAIL_CHARS = 400


def parse_header(line: bytes) -> dict[str, str]:
    return dict(tok.split(":", 1) for tok in line.decode().split() if ":" in tok)


def log_tail(log_dir: str, program: str) -> str:
    if not log_dir:
        return ""
    try:
        text = (Path(log_dir) / f"{program}.log").read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-3:])[-LOG_TAIL_CHARS:]


class FatalReporter:
    """Reports one FATAL program: log, audit, hooks, bus."""

    def __init__(self, cfg: KhazadConfig | None, log_dir: str = "") -> None:
        self.cfg = cfg
        self.log_dir = log_dir
        self.router: AlertRouter | None = None
        if cfg is not None:
            try:
                self.router = AlertRouter(cfg.monitor, cfg.run_path)
            except ConfigError as exc:  # keep reporting to the log, the audit and the bus
                logger.error("fatal_listener: alert routes unusable, not routing: {}", exc)
        self._ctx: zmq.Context | None = None
        self._pub: Publisher | None = None
        self._security: Security | None = None
        self._ready = False

    def alert_for(self, payload: dict[str, str], event: str = "PROCESS_STATE_FATAL") -> Alert:
        program = payload.get("processname", "?")
        tail = log_tail(self.log_dir, program)
        if event == "PROCESS_STATE_EXITED":
            # exitcodes = 0,78: an actor that stops on its own after startsecs with 0 or 78 (a configuration
            # problem found late, e.g. the gateway's account check after connecting) is not restarted
            message = (
                f"{program} exited on its own with an expected code (configuration error or clean exit) "
                f"and will not be restarted; see its log, fix the cause, then `supervisorctl start {program}`"
            )
        else:
            message = (
                f"{program} is FATAL: supervisord gave up restarting it (was {payload.get('from_state', '?')}); "
                f"fix the cause, then `supervisorctl start {program}`"
            )
        detail = {
            "program": program,
            "group": payload.get("groupname", ""),
            "from_state": payload.get("from_state", ""),
            "hooked": "yes",
            "audited": "yes",
        }
        if tail:
            detail["log_tail"] = tail
        return Alert(
            kind="process_fatal",
            severity="critical",
            message=message,
            source="supervisor",
            detail=detail,
            wall_ns=time.time_ns(),
        )

    def report(self, payload: dict[str, str], event: str = "PROCESS_STATE_FATAL") -> Alert:
        alert = self.alert_for(payload, event)
        logger.critical("ALERT [critical] process_fatal: {}", alert.message)
        if self.cfg is not None:
            try:
                audit = AuditLog(self.cfg.path(self.cfg.monitor.audit_db))
                try:
                    audit.record(
                        ALERT,
                        source="supervisor",
                        scope=alert.detail["program"],
                        summary=alert.message,
                        detail=dict(alert.detail),
                    )
                finally:
                    audit.close()
            except Exception as exc:  # reporting must go on: the bus and the hooks may still work
                logger.error("fatal_listener: audit write failed: {}", exc)
        if self.router is not None:
            self.router.offer(alert)
        self.publish(alert)
        return alert

    def publish(self, alert: Alert) -> bool:
        if self.cfg is None:
            return False
        bus = self.cfg.bus
        if self._pub is None:
            self._ctx = zmq.Context()
            self._security = None
            if bus.curve.enabled:  # the listener speaks for the monitor on an authenticated bus
                from bus.security import Security

                self._security = Security.for_process(self.cfg, "monitor")
            key = self._security.server_key("proxy") if self._security else None
            self._pub = Publisher(
                self._ctx,
                bus.proxy_frontend,
                Stamper(PROCESS),
                sndhwm=bus.send_hwm,
                security=self._security,
                server_key=key,
            )
        if not self._ready:
            try:
                key = self._security.server_key("proxy") if self._security else None
                self._pub.wait_ready_sync(
                    bus.proxy_backend, timeout=PUBLISH_READY_TIMEOUT_S, security=self._security, server_key=key
                )
                self._ready = True
            except TimeoutError:
                logger.error("fatal_listener: bus proxy not answering; alert only logged, audited and hooked")
                return False
        self._pub.publish(topics.alert("process_fatal"), alert)
        return True

    def close(self) -> None:
        if self.router is not None:
            self.router.drain(ROUTES_DRAIN_S)
            self.router.close()
        if self._pub is not None:
            self._pub.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)


def serve(stdin: BinaryIO, stdout: BinaryIO, reporter: FatalReporter) -> None:
    """The event-listener loop (returns at EOF)."""
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return
        header = parse_header(line)
        body = stdin.read(int(header.get("len", "0")))
        try:
            event = header.get("eventname")
            payload = parse_header(body.split(b"\n", 1)[0])
            if event == "PROCESS_STATE_FATAL" or (event == "PROCESS_STATE_EXITED" and payload.get("expected") == "1"):
                reporter.report(payload, event)
        except Exception as exc:  # never fail the protocol: supervisord would stall the event pool
            logger.opt(exception=exc).error("fatal_listener: could not report {}: {}", body[:200], exc)
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.monitor.fatal_listener")
    parser.add_argument("--config", help="path to khazad.toml")
    parser.add_argument("--log-dir", default="", help="where supervisord writes <program>.log")
    args = parser.parse_args(argv)
    setup_logging(PROCESS)
    # supervisord stops the listener with SIGTERM while it waits for an event: that is a clean exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cfg: KhazadConfig | None
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:  # keep listening: FATAL programs are still logged (and that is likely why)
        logger.error("fatal_listener: configuration error, reporting to the log only: {}", exc)
        cfg = None
    reporter = FatalReporter(cfg, args.log_dir)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer, reporter)
    finally:
        reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
