"""What the configuration's types cannot say, checked after decoding: bus endpoints (loopback unless explicitly
exposed with CURVE), the trading day, the P&L reset time and the alert routes. Each raises :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

import ipaddress
import re

from bus import registry
from bus.config_errors import ConfigError
from bus.config_sections import (
    BusConfig,
    CommandRoute,
    EmailRoute,
    MonitorConfig,
    PortfolioConfig,
    RiskConfig,
    WebhookRoute,
)
from bus.tradingday import parse_spec


def check_portfolio(portfolio: PortfolioConfig) -> None:
    try:
        parse_spec(portfolio.trading_day)
    except ValueError as exc:
        raise ConfigError(f"portfolio.trading_day: {exc}") from None


def check_alert_routes(monitor: MonitorConfig) -> None:
    """What the types cannot say: one source per URL, http(s) URLs, unique names, TLS modes that exclude."""
    names: set[str] = set()
    for i, route in enumerate(monitor.alert_routes):
        key = f"monitor.alert_routes.{i}"
        name = route.label(i)
        if name in names:
            raise ConfigError(f"{key}.name: {name!r} is used by another route")
        names.add(name)
        if isinstance(route, WebhookRoute):
            given = [k for k in ("url", "url_env", "url_file") if getattr(route, k)]
            if len(given) != 1:
                raise ConfigError(f"{key}.url: set exactly one of url, url_env, url_file (got {given or 'none'})")
            if route.url and not re.match(r"^https?://[^\s/]+", route.url):
                raise ConfigError(f"{key}.url: must be an http:// or https:// URL")
        elif isinstance(route, EmailRoute):
            if route.ssl and route.starttls:
                raise ConfigError(f"{key}.starttls: ssl (implicit TLS) and starttls exclude each other")
            if route.password_env and route.password_file:
                raise ConfigError(f"{key}.password_env: set password_env or password_file, not both")
            if (route.password_env or route.password_file) and not route.username:
                raise ConfigError(f"{key}.username: a password needs a username")
            if "@" not in route.sender:
                raise ConfigError(f"{key}.sender: not an email address")
            for j, rcpt in enumerate(route.recipients):
                if "@" not in rcpt:
                    raise ConfigError(f"{key}.recipients.{j}: not an email address")
        elif isinstance(route, CommandRoute) and not route.command.strip():
            raise ConfigError(f"{key}.command: empty")


def check_pnl_reset(risk: RiskConfig) -> None:
    """``risk.pnl_reset`` must name IB's per-instrument schedule or a time in a known time zone."""
    from bus.sessions import parse_reset

    try:
        parse_reset(risk.pnl_reset)
    except ValueError as exc:
        raise ConfigError(f"risk.pnl_reset: {exc}") from None


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://host:port`` endpoint (None for ipc/inproc)."""
    if not endpoint.startswith("tcp://"):
        return None
    hostport = endpoint[len("tcp://") :]
    host, _, _ = hostport.rpartition(":")
    return host.strip("[]")


def is_loopback_host(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoints(bus: BusConfig) -> None:
    """Refuse non-loopback tcp endpoints unless explicitly allowed and encrypted with CURVE."""
    for field in registry.ENDPOINT_FIELDS:
        ep = getattr(bus, field)
        if not re.match(r"^(tcp://[^\s]+:\d+|ipc://\S+|inproc://\S+)$", ep):
            raise ConfigError(f"bus.{field}: {ep!r} is not a ZeroMQ endpoint like tcp://127.0.0.1:5560")
        host = endpoint_host(ep)
        if host is None or is_loopback_host(host):
            continue
        if not bus.allow_non_loopback:
            raise ConfigError(
                f"bus.{field}: {ep} is not loopback; set bus.allow_non_loopback = true to expose the bus to other hosts"
            )
        if not bus.curve.enabled:
            raise ConfigError(
                f"bus.{field}: {ep} is reachable from other hosts; set bus.curve.enabled = true (khazad keys) first"
            )
