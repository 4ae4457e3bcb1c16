"""Configuration: one TOML file (``khazad.toml``) decoded into frozen msgspec Structs, one per actor.

Load order: the file, then environment overrides ``KHAZAD__<SECTION>__<KEY>=value`` (values parsed as TOML
scalars when possible, e.g. ``KHAZAD__GATEWAY__PORT=4001``), then secrets that never live in the file
(``KHAZAD_APPROVAL_KEY``, ``KHAZAD_LIVE_CONFIRM``). A bad key or value raises :class:`ConfigError` naming the
key (``gateway.port: Expected `int`, got `str```), and unknown keys are errors too: a typo in a risk limit must
not silently fall back to a default.

The schema (one Struct per section) is in ``bus/config_sections.py``, the checks the types cannot express in
``bus/config_checks.py``, the error and exit code in ``bus/config_errors.py``; this module loads the file and
re-exports those names, so ``from bus.config import KhazadConfig, load_config, ConfigError`` stays the one import.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from bus.config_checks import (
    check_alert_routes,
    check_endpoints,
    check_pnl_reset,
    check_portfolio,
    endpoint_host,
    is_loopback_host,
)
from bus.config_errors import EXIT_CONFIG, ConfigError
from bus.config_sections import (
    AlertRoute,
    BusConfig,
    CommandRoute,
    CurveConfig,
    EmailRoute,
    GatewayConfig,
    KhazadConfig,
    LoggingConfig,
    MonitorConfig,
    NonNeg,
    OrdersConfig,
    Port,
    PortfolioConfig,
    Positive,
    RiskConfig,
    RiskLimits,
    Severity,
    SimConfigSection,
    SlackRoute,
    StrategyConfig,
    StrategyLimits,
    TeamsRoute,
    WebhookRoute,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "DEFAULT_CONFIG_NAME",
    "find_config_path",
    "load_config",
    "read_secret_file",
    "EXIT_CONFIG",
    "ConfigError",
    "Port",
    "Positive",
    "NonNeg",
    "CurveConfig",
    "BusConfig",
    "LoggingConfig",
    "SimConfigSection",
    "GatewayConfig",
    "RiskLimits",
    "StrategyLimits",
    "RiskConfig",
    "OrdersConfig",
    "PortfolioConfig",
    "Severity",
    "WebhookRoute",
    "SlackRoute",
    "TeamsRoute",
    "EmailRoute",
    "CommandRoute",
    "AlertRoute",
    "MonitorConfig",
    "StrategyConfig",
    "KhazadConfig",
    "check_portfolio",
    "check_alert_routes",
    "check_pnl_reset",
    "endpoint_host",
    "is_loopback_host",
    "check_endpoints",
]

CONFIG_ENV = "KHAZAD_CONFIG"
ENV_PREFIX = "KHAZAD__"
DEFAULT_CONFIG_NAME = "khazad.toml"


_PATH_RE = re.compile(r"`\$\.?([^`]*)`")


def _explain(err: msgspec.ValidationError) -> str:
    msg = str(err)
    m = _PATH_RE.search(msg)
    if not m:
        field = re.search(r"unknown field `([^`]+)`", msg)
        return f"{field.group(1)}: unknown key (check its spelling)" if field else msg
    key = m.group(1).replace("[", ".").replace("]", "").replace("'", "").replace('"', "")
    text = re.sub(r"\s*-\s*at\s*$", "", _PATH_RE.sub("", msg))
    missing = re.search(r"missing required field `([^`]+)`", msg)
    if missing:
        return f"{key + '.' if key else ''}{missing.group(1)}: required key missing"
    if "unknown field" in text.lower():
        field = re.search(r"Object contains unknown field `?([^`\s]+)", msg)
        if field:
            return f"{key}.{field.group(1)}: unknown key (check its spelling)"
        return f"{key}: unknown key (check its spelling)"
    return f"{key or '<root>'}: {text}"


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply ``KHAZAD__<SECTION>__<KEY>`` overrides; returns {dotted key: variable name} for error messages."""
    applied: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section")
            node = child
        node[path[-1]] = _parse_env_value(raw)
        applied[".".join(path)] = name
    return applied


def _blame(message: str, from_env: dict[str, str]) -> str:
    """Point at the environment variable when the bad key came from one (the file is not where to look)."""
    key = message.split(":", 1)[0]
    return f"{message} (set by environment variable {from_env[key]})" if key in from_env else message


def find_config_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.exists() else None


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> KhazadConfig:
    """Load and validate the whole configuration; raises :class:`ConfigError` with the bad key named."""
    env = os.environ if env is None else env
    cfg_path = find_config_path(path, env)
    data: dict[str, Any] = {}
    if cfg_path is not None:
        try:
            data = tomllib.loads(Path(cfg_path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {cfg_path} not found (set {CONFIG_ENV} or pass --config)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
    from_env = _apply_env(data, env)
    data["base_dir"] = str(Path(cfg_path).resolve().parent) if cfg_path else str(Path.cwd())
    where = f"{cfg_path}: " if cfg_path else ""
    # msgspec reports dict entries as `[...]`; validate named sub-tables first so the error names the entry.
    strategies = data.get("risk", {}).get("strategies", {}) if isinstance(data.get("risk"), dict) else {}
    for sid, table in strategies.items() if isinstance(strategies, dict) else ():
        try:
            msgspec.convert(table, StrategyLimits)
        except msgspec.ValidationError as exc:
            message = f"risk.strategies.{sid}.{_explain(exc).removeprefix('<root>: ')}"
            raise ConfigError(f"{where}{_blame(message, from_env)}") from None
    try:
        cfg = msgspec.convert(data, KhazadConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}{_blame(_explain(exc), from_env)}") from None
    check_endpoints(cfg.bus)
    try:
        check_portfolio(cfg.portfolio)
        check_alert_routes(cfg.monitor)
        check_pnl_reset(cfg.risk)
    except ConfigError as exc:
        raise ConfigError(f"{where}{_blame(str(exc), from_env)}") from None
    return cfg


def read_secret_file(path: Path) -> bytes:
    """Read a secret (key file). Never logged; the caller decides what a missing file means."""
    return path.read_bytes().strip()
