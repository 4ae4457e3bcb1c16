"""Alert delivery: one :class:`RouteWorker` per configured route, each with its own severity threshold, bounded
queue, worker thread, retries with exponential backoff and rate limit, so a slow or failing destination never
delays another route or the monitor (offering an alert never blocks: a full queue drops it, counted and logged).

Routes come from ``[[monitor.alert_routes]]`` (Slack, Teams, email, webhook, command) plus the two legacy keys,
which stay contracts: ``monitor.alert_command`` is a command route and ``monitor.alert_webhook`` a webhook route,
both for critical alerts. Secrets (webhook URLs carry tokens, SMTP passwords) come from the file or the environment
named in the route and are resolved when the router is built (a missing one is a ConfigError naming the key); they
are never logged: a webhook is named by its host only.
"""

from __future__ import annotations

import json
import os
import queue
import smtplib
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from actors.monitor.alert_payloads import alert_json, email_message, slack_payload, teams_payload
from bus.config import (
    AlertRoute,
    CommandRoute,
    ConfigError,
    EmailRoute,
    MonitorConfig,
    SlackRoute,
    TeamsRoute,
    WebhookRoute,
    read_secret_file,
)
from bus.messages import Alert

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: The legacy hooks' bounds (kept): the command 10 s, the webhook POST 5 s.
LEGACY_COMMAND_TIMEOUT_S = 10.0
LEGACY_WEBHOOK_TIMEOUT_S = 5.0
#: Longest wait between two attempts, however many retries.
MAX_BACKOFF_S = 60.0
RATE_WINDOW_S = 60.0
USER_AGENT = "khazad-monitor"


class DeliveryError(Exception):
    """One delivery attempt failed (the message never carries a secret)."""


def host_of(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _secret(route_key: str, inline: str, env_name: str, file_name: str, base: Path, what: str) -> str:
    if inline:
        return inline
    if env_name:
        value = os.environ.get(env_name, "")
        if not value:
            raise ConfigError(f"{route_key}.{what}_env: environment variable {env_name} is not set")
        return value.strip()
    if file_name:
        path = Path(file_name).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            return read_secret_file(path).decode().strip()
        except OSError as exc:
            raise ConfigError(f"{route_key}.{what}_file: cannot read {path}: {exc.strerror}") from None
    return ""


# -- transports (each raises DeliveryError on failure) ------------------------------------------------------------


def post_json(url: str, payload: bytes, timeout_s: float) -> None:
    req = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (the operator's URL)
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{host_of(url)} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryError(f"{host_of(url)}: {getattr(exc, 'reason', exc)}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"{host_of(url)} answered {status}")


def run_command(command: str, payload: bytes, timeout_s: float) -> None:
    try:
        proc = subprocess.run(command, shell=True, input=payload, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"did not finish within {timeout_s:g}s") from None
    except OSError as exc:
        raise DeliveryError(f"could not run: {exc}") from None
    if proc.returncode != 0:
        raise DeliveryError(f"exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}")


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool
    implicit_tls: bool
    username: str
    password: str = field(repr=False)
    sender: str
    recipients: list[str]
    prefix: str


def send_email(target: SmtpTarget, alert: Alert, timeout_s: float) -> None:
    msg = email_message(alert, target.sender, target.recipients, target.prefix)
    try:
        context = ssl.create_default_context()
        if target.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout_s, context=context)
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=timeout_s)
        with client:
            client.ehlo()
            if target.starttls and not target.implicit_tls:
                if not client.has_extn("starttls"):
                    raise DeliveryError(f"{target.host} does not offer STARTTLS (set starttls = false to send plain)")
                client.starttls(context=context)
                client.ehlo()
            if target.username:
                client.login(target.username, target.password)
            client.send_message(msg)
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{target.host}: authentication refused ({exc.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{target.host}:{target.port}: {type(exc).__name__}: {exc}") from None


# -- one route ----------------------------------------------------------------------------------------------------


@dataclass
class RouteStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    dropped_overflow: int = 0
    dropped_rate: int = 0


class RouteWorker:
    """One route: severity filter, bounded queue, a worker thread that delivers with retries and a rate limit."""

    def __init__(
        self,
        name: str,
        kind: str,
        send: Callable[[Alert], None],
        *,
        min_severity: str,
        retries: int,
        backoff_s: float,
        rate_limit_per_min: int,
        queue_size: int,
        describe: str,
        on_outcome: Callable[[str, str, Alert], None] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.describe = describe
        self._send = send
        self.min_rank = SEVERITY_RANK[min_severity]
        self.retries = retries
        self.backoff_s = backoff_s
        self.rate_limit = rate_limit_per_min
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self._sent_at: deque[float] = deque()
        self._stop = threading.Event()
        #: alerts offered and not yet handled (delivered, failed or dropped): drain() waits for 0
        self._pending = 0
        self._done = threading.Condition()
        self.stats = RouteStats()
        self._on_outcome = on_outcome
        self._thread = threading.Thread(target=self._run, name=f"alert-route-{name}", daemon=True)
        self._thread.start()

    def wants(self, alert: Alert) -> bool:
        return SEVERITY_RANK.get(alert.severity, 0) >= self.min_rank

    def offer(self, alert: Alert) -> bool:
        """Queue ``alert`` for delivery without ever blocking; False when filtered out or dropped."""
        if not self.wants(alert):
            return False
        with self._done:
            self._pending += 1
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._handled()
            self.stats.dropped_overflow += 1
            self._outcome("dropped_overflow", alert)
            logger.error(
                "alert route {}: queue full ({}), {} not delivered", self.name, self._queue.maxsize, alert.kind
            )
            return False
        self.stats.queued += 1
        return True

    def _outcome(self, what: str, alert: Alert) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(self.name, what, alert)
            except Exception as exc:  # counting must never stop delivery
                logger.warning("alert route {}: outcome hook failed: {}", self.name, exc)

    def _rate_ok(self) -> bool:
        now = time.monotonic()
        while self._sent_at and now - self._sent_at[0] >= RATE_WINDOW_S:
            self._sent_at.popleft()
        if len(self._sent_at) >= self.rate_limit:
            return False
        self._sent_at.append(now)
        return True

    def _handled(self) -> None:
        with self._done:
            self._pending -= 1
            self._done.notify_all()

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None or self._stop.is_set():
                return
            try:
                if not self._rate_ok():
                    self.stats.dropped_rate += 1
                    self._outcome("dropped_rate", alert)
                    logger.warning(
                        "alert route {}: over {} alerts/min, {} not delivered", self.name, self.rate_limit, alert.kind
                    )
                    continue
                self._deliver(alert)
            finally:
                self._handled()

    def _deliver(self, alert: Alert) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._send(alert)
            except DeliveryError as exc:
                last = attempt == self.retries
                logger.error(
                    "alert route {} ({}): attempt {}/{} for {} failed: {}",
                    self.name,
                    self.describe,
                    attempt + 1,
                    self.retries + 1,
                    alert.kind,
                    exc,
                )
                if last:
                    break
                self.stats.retried += 1
                if self._stop.wait(min(MAX_BACKOFF_S, self.backoff_s * 2**attempt)):  # backoff, cut by stop()
                    break
                continue
            except Exception as exc:  # a bug in a transport must not kill the worker
                logger.opt(exception=exc).error("alert route {}: unexpected failure: {}", self.name, exc)
                break
            self.stats.delivered += 1
            self._outcome("delivered", alert)
            logger.info("alert route {} ({}): {} delivered", self.name, self.describe, alert.kind)
            return
        self.stats.failed += 1
        self._outcome("failed", alert)

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything offered was handled (tests, shutdown); True when nothing is pending."""
        with self._done:
            return self._done.wait_for(lambda: self._pending <= 0, timeout_s)

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)


# -- the router ---------------------------------------------------------------------------------------------------


def _webhook_sender(route: WebhookRoute, url: str) -> Callable[[Alert], None]:
    if isinstance(route, SlackRoute):
        return lambda a: post_json(url, json.dumps(slack_payload(a)).encode(), route.timeout_s)
    if isinstance(route, TeamsRoute):
        return lambda a: post_json(url, json.dumps(teams_payload(a, route.card)).encode(), route.timeout_s)
    return lambda a: post_json(url, alert_json(a), route.timeout_s)


def build_worker(route: AlertRoute, index: int, base: Path, on_outcome: Any = None) -> RouteWorker:
    key = f"monitor.alert_routes.{index}"
    describe = route.kind
    if isinstance(route, WebhookRoute):
        url = _secret(key, route.url, route.url_env, route.url_file, base, "url")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: the URL from {route.url_env or route.url_file} is not http(s)")
        send = _webhook_sender(route, url)
        describe = f"{route.kind} to {host_of(url)}"
    elif isinstance(route, EmailRoute):
        password = _secret(key, "", route.password_env, route.password_file, base, "password")
        target = SmtpTarget(
            route.smtp_host,
            route.smtp_port,
            route.starttls,
            route.ssl,
            route.username,
            password,
            route.sender,
            list(route.recipients),
            route.subject_prefix,
        )
        send = lambda a: send_email(target, a, route.timeout_s)  # noqa: E731
        describe = f"email via {route.smtp_host}:{route.smtp_port} to {len(route.recipients)} recipient(s)"
    elif isinstance(route, CommandRoute):
        send = lambda a: run_command(route.command, alert_json(a), route.timeout_s)  # noqa: E731
        describe = "command"
    else:  # pragma: no cover - the config's union is closed
        raise ConfigError(f"{key}.kind: unknown route kind")
    return RouteWorker(
        route.label(index),
        route.kind,
        send,
        min_severity=route.min_severity,
        retries=route.retries,
        backoff_s=route.backoff_s,
        rate_limit_per_min=route.rate_limit_per_min,
        queue_size=route.queue_size,
        describe=describe,
        on_outcome=on_outcome,
    )


def routes_of(mon: MonitorConfig) -> list[AlertRoute]:
    """The configured routes plus the legacy keys as routes (critical alerts only, their old time bounds)."""
    routes: list[AlertRoute] = list(mon.alert_routes)
    if mon.alert_command.strip():
        routes.append(
            CommandRoute(
                name="alert_command",
                command=mon.alert_command.strip(),
                min_severity="critical",
                retries=0,
                timeout_s=LEGACY_COMMAND_TIMEOUT_S,
            )
        )
    if mon.alert_webhook.strip():
        routes.append(
            WebhookRoute(
                name="alert_webhook",
                url=mon.alert_webhook.strip(),
                min_severity="critical",
                retries=2,
                timeout_s=LEGACY_WEBHOOK_TIMEOUT_S,
            )
        )
    return routes


class AlertRouter:
    """Every route of the configuration; :meth:`offer` hands an alert to each route that wants it (never blocks)."""

    def __init__(self, mon: MonitorConfig, base: Path, on_outcome: Any = None) -> None:
        self.workers: list[RouteWorker] = []
        try:
            for i, route in enumerate(routes_of(mon)):
                self.workers.append(build_worker(route, i, base, on_outcome))
        except BaseException:
            self.close(0.1)
            raise
        for w in self.workers:
            logger.info(
                "monitor: alert route {} ({}), {} and above",
                w.name,
                w.describe,
                [k for k, v in SEVERITY_RANK.items() if v == w.min_rank][0],
            )

    @property
    def enabled(self) -> bool:
        return bool(self.workers)

    def offer(self, alert: Alert) -> list[str]:
        """Queue ``alert`` on every route whose threshold it meets; returns their names."""
        return [w.name for w in self.workers if w.offer(alert)]

    def drain(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(w.drain(max(0.0, deadline - time.monotonic())) for w in self.workers)

    def close(self, timeout_s: float = 1.0) -> None:
        for w in self.workers:
            w.stop(timeout_s)
