"""Alert hooks: an operator's command (alert JSON on stdin) and/or a webhook (JSON POST), each bounded in time.

A hook never blocks the monitor's loop (it runs in a worker thread) and never raises into it: a failing or hanging
hook is logged and abandoned after its timeout. Webhook URLs often carry tokens, so only the host is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import msgspec
from loguru import logger

from bus.messages import Alert

#: Upper bound for the alert command and the webhook POST.
ALERT_COMMAND_TIMEOUT_S = 10.0
WEBHOOK_TIMEOUT_S = 5.0
#: Hooks running at once; more alerts than this while they run are logged and not hooked (an alert storm must
#: not pile up threads).
MAX_CONCURRENT_HOOKS = 4


def alert_json(alert: Alert, **extra: Any) -> bytes:
    payload = msgspec.to_builtins(alert)
    payload.update(extra)
    return json.dumps(payload, sort_keys=True).encode()


def _host_of(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class AlertHooks:
    """Runs the configured alert command and webhook for one alert (thread-safe, bounded)."""

    def __init__(self, command: str = "", webhook: str = "") -> None:
        self.command = command.strip()
        self.webhook = webhook.strip()
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_HOOKS)
        self.fired = 0
        self.failed = 0
        self.skipped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)

    def run_command(self, payload: bytes) -> bool:
        try:
            proc = subprocess.run(
                self.command,
                shell=True,
                input=payload,
                capture_output=True,
                timeout=ALERT_COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            logger.error("alert command did not finish within {:.0f}s", ALERT_COMMAND_TIMEOUT_S)
            return False
        except OSError as exc:
            logger.error("alert command could not run: {}", exc)
            return False
        if proc.returncode != 0:
            logger.error(
                "alert command exited {}: {}", proc.returncode, proc.stderr.decode(errors="replace").strip()[-300:]
            )
            return False
        return True

    def post_webhook(self, payload: bytes) -> bool:
        req = urllib.request.Request(
            self.webhook,
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "khazad-monitor"},
        )
        try:
            with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as resp:  # noqa: S310 (operator's URL)
                ok = 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.error("alert webhook to {} failed: {}", _host_of(self.webhook), getattr(exc, "reason", exc))
            return False
        if not ok:
            logger.error("alert webhook to {} answered {}", _host_of(self.webhook), resp.status)
        return ok

    def fire_sync(self, alert: Alert) -> bool:
        """Run every configured hook for ``alert`` now (blocking, bounded); True when all succeeded."""
        if not self.enabled:
            return True
        if not self._slots.acquire(blocking=False):
            self.skipped += 1
            logger.warning("alert hooks busy: not hooking {} ({})", alert.kind, alert.message)
            return False
        try:
            payload = alert_json(alert)
            ok = True
            if self.command:
                ok = self.run_command(payload) and ok
            if self.webhook:
                ok = self.post_webhook(payload) and ok
            self.fired += 1
            if not ok:
                self.failed += 1
            return ok
        finally:
            self._slots.release()

    async def fire(self, alert: Alert) -> bool:
        """As :meth:`fire_sync`, in a worker thread (never blocks the event loop)."""
        if not self.enabled:
            return True
        return await asyncio.get_running_loop().run_in_executor(None, self.fire_sync, alert)
