"""Validated connection settings: which IB to talk to, as whom, and proof that live trading is meant.

Every check here raises :class:`~bus.config.ConfigError` with a message that names what to set; the process
exits with :data:`~bus.config.EXIT_CONFIG` (78), which supervisord treats as fatal (no restart loop). There is
no fallback: a paper or live configuration that cannot connect keeps retrying that gateway and never the
simulator.

Two stages:

* :func:`resolve_settings` before connecting: mode, port, account, the live confirmation;
* :func:`check_accounts` after connecting: the accounts the server manages must agree with the mode (a paper
  configuration pointed at a live gateway, or the reverse, is stopped before any request is sent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bus.config import ConfigError, KhazadConfig

LIVE_CONFIRM_ENV = "KHAZAD_LIVE_CONFIRM"
#: IB paper accounts are DU + digits (DF for paper FA masters).
PAPER_ACCOUNT_RE = re.compile(r"^D[UF]\d+$")
ACCOUNT_RE = re.compile(r"^[A-Z]{1,3}\d+[A-Z]?$")
#: Well-known ports: TWS live 7496 / paper 7497, IB Gateway live 4001 / paper 4002.
LIVE_PORTS = frozenset({7496, 4001})
PAPER_PORTS = frozenset({7497, 4002})
DEFAULT_PORTS = {"paper": 4002, "live": 4001}


def is_paper_account(account: str) -> bool:
    return bool(PAPER_ACCOUNT_RE.match(account))


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What the gateway connects to, resolved from ``[gateway]`` (and ``[sim]`` in sim mode)."""

    mode: str
    host: str
    port: int
    client_id: int
    account: str
    client_library: str
    connect_timeout_s: float
    reconnect_initial_s: float
    reconnect_max_s: float
    pacing_per_s: int
    kill_verify_timeout_s: float
    master_client_id: bool = False
    auto_open_orders: bool = True

    @property
    def sees_every_order_live(self) -> bool:
        """IB reports every client's orders to this client as they change (client id 0, or TWS's master id)."""
        return self.client_id == 0 or self.master_client_id

    def describe(self) -> str:
        return (
            f"mode={self.mode} {self.host}:{self.port} client_id={self.client_id} "
            f"account={self.account or '(from server)'} library={self.client_library} "
            f"other clients' orders: {'live' if self.sees_every_order_live else 'when IB lists them'}"
            + (" (TWS orders bound)" if self.client_id == 0 and self.auto_open_orders else "")
        )


def resolve_settings(cfg: KhazadConfig, env: Mapping[str, str] | None = None) -> GatewaySettings:
    """Validate ``[gateway]`` for its mode; raises :class:`ConfigError` naming what to set."""
    env = os.environ if env is None else env
    g = cfg.gateway
    mode = g.mode
    confirm = env.get(LIVE_CONFIRM_ENV, "").strip()
    account = g.account.strip()
    if not g.host.strip():
        raise ConfigError("gateway.host is empty: set it to the TWS/IB Gateway host (127.0.0.1 when local)")
    if g.reconnect_initial_s > g.reconnect_max_s:
        raise ConfigError(
            f"gateway.reconnect_initial_s ({g.reconnect_initial_s}) is larger than "
            f"gateway.reconnect_max_s ({g.reconnect_max_s})"
        )
    if account and not ACCOUNT_RE.match(account):
        raise ConfigError(
            f"gateway.account {account!r} does not look like an IB account id (e.g. DU1234567 or U1234567)"
        )
    if mode == "sim":
        port = g.port or cfg.sim.port
        if confirm:
            raise ConfigError(
                f"{LIVE_CONFIRM_ENV} is set but gateway.mode is 'sim': unset {LIVE_CONFIRM_ENV}, or "
                f'set gateway.mode = "live" to trade live'
            )
        if port in LIVE_PORTS:
            raise ConfigError(
                f"gateway.port {port} is a live TWS/IB Gateway port but gateway.mode is 'sim': "
                f"use [sim].port (set gateway.port = 0) or set gateway.mode"
            )
        if account and account != cfg.sim.account:
            raise ConfigError(
                f"gateway.account {account} is not the simulator's account ({cfg.sim.account}): "
                f'set gateway.account = "{cfg.sim.account}" or leave it empty in sim mode'
            )
    elif mode == "paper":
        port = g.port or DEFAULT_PORTS["paper"]
        if not account:
            raise ConfigError("gateway.account is required in paper mode: set it to your paper account (DU...)")
        if not is_paper_account(account):
            raise ConfigError(
                f"gateway.account {account} is not a paper account (paper accounts start with DU); "
                f'paper mode refuses it. Set gateway.mode = "live" (with {LIVE_CONFIRM_ENV}) to '
                f"trade it live"
            )
        if confirm:
            raise ConfigError(
                f"{LIVE_CONFIRM_ENV} is set but gateway.mode is 'paper': unset it, or set gateway.mode = \"live\""
            )
        if port in LIVE_PORTS:
            raise ConfigError(
                f"gateway.port {port} is a live TWS/IB Gateway port but gateway.mode is 'paper': "
                f"set gateway.port to the paper port (IB Gateway 4002, TWS 7497)"
            )
    elif mode == "live":
        port = g.port or DEFAULT_PORTS["live"]
        if not account:
            raise ConfigError("gateway.account is required in live mode: set it to your live account (U...)")
        if is_paper_account(account):
            raise ConfigError(
                f"gateway.account {account} is a paper account but gateway.mode is 'live': set gateway.mode = \"paper\""
            )
        if not confirm:
            raise ConfigError(f"live trading needs an explicit confirmation: set {LIVE_CONFIRM_ENV}={account}")
        if confirm != account:
            raise ConfigError(
                f"{LIVE_CONFIRM_ENV} names {confirm!r}, not the live account gateway.account "
                f"({account}): set {LIVE_CONFIRM_ENV}={account}"
            )
        if port in PAPER_PORTS:
            raise ConfigError(
                f"gateway.port {port} is a paper TWS/IB Gateway port but gateway.mode is 'live': "
                f"set gateway.port to the live port (IB Gateway 4001, TWS 7496)"
            )
    else:  # the config decoder already restricts the literal; keep the guard for direct construction
        raise ConfigError(f"gateway.mode {mode!r} is not one of sim, paper, live")
    return GatewaySettings(
        mode=mode,
        host=g.host.strip(),
        port=port,
        client_id=g.client_id,
        account=account,
        client_library=g.client_library,
        connect_timeout_s=g.connect_timeout_s,
        reconnect_initial_s=g.reconnect_initial_s,
        reconnect_max_s=g.reconnect_max_s,
        pacing_per_s=g.pacing_per_s,
        kill_verify_timeout_s=g.kill_verify_timeout_s,
        master_client_id=g.master_client_id,
        auto_open_orders=g.auto_open_orders,
    )


def check_accounts(settings: GatewaySettings, managed: list[str]) -> str:
    """After connecting: the account to trade, or :class:`ConfigError` if the server contradicts the mode."""
    managed = [a for a in managed if a]
    if not managed:
        raise ConfigError(
            f"{settings.host}:{settings.port} reported no managed accounts: is this an IB login "
            f"with trading permissions?"
        )
    where = f"{settings.host}:{settings.port}"
    live = [a for a in managed if not is_paper_account(a)]
    paper = [a for a in managed if is_paper_account(a)]
    if settings.mode in ("sim", "paper") and live:
        raise ConfigError(
            f"gateway.mode is '{settings.mode}' but {where} manages live account(s) "
            f"{', '.join(live)}: point gateway.host/port at a paper gateway (IB Gateway paper "
            f'port 4002, TWS 7497) or set gateway.mode = "live"'
        )
    if settings.mode == "live" and paper:
        raise ConfigError(
            f"gateway.mode is 'live' but {where} manages paper account(s) {', '.join(paper)}: "
            f"point gateway.host/port at the live gateway (IB Gateway 4001, TWS 7496) or set "
            f'gateway.mode = "paper"'
        )
    if settings.account:
        if settings.account not in managed:
            raise ConfigError(
                f"gateway.account {settings.account} is not among the accounts {where} manages "
                f"({', '.join(managed)}): set gateway.account to one of them"
            )
        return settings.account
    if len(managed) == 1:
        return managed[0]
    raise ConfigError(f"{where} manages several accounts ({', '.join(managed)}): set gateway.account")
