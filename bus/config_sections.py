"""The configuration's schema: one frozen msgspec Struct per section of ``khazad.toml`` (one per actor, plus the
bus, logging, the simulator and the alert routes), with every key's default. ``KhazadConfig`` is the whole file.

Loading, environment overrides and the checks the types cannot express are in ``bus/config.py`` and
``bus/config_checks.py``. Unknown keys are errors (``forbid_unknown_fields``): a typo in a risk limit must not
silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from bus import registry
from bus.admission import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_INFLIGHT_PER_CALLER,
    DEFAULT_MAX_PLACEMENTS_IN_FLIGHT,
    DEFAULT_MAX_WAITS,
    DEFAULT_MAX_WAITS_PER_CALLER,
)
from bus.config_errors import ConfigError
from bus.tradingday import DEFAULT_TRADING_DAY

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
NonNeg = Annotated[float, Meta(ge=0)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class CurveConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """CURVE encryption/authentication of every endpoint, loopback included (see ``bus/security.py``). On by
    default: ``khazad run`` creates the keys and the allow-list (``<keys_dir>/allow.toml``) on first start."""

    #: false only for a test that needs a plain bus explicitly (never for a running system)
    enabled: bool = True
    #: key pairs, server public keys and the operator's allow-list (relative to run_dir)
    keys_dir: str = "keys"
    #: this process's key pair name inside keys_dir (default: the actor's name, the strategy id, the CLI ``operator``)
    key_name: str = ""


class BusConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the event proxy and every service listen. Endpoints are bound by their owner, connected by others."""

    proxy_frontend: str = "tcp://127.0.0.1:5550"  # publishers connect here (XSUB)
    proxy_backend: str = "tcp://127.0.0.1:5551"  # subscribers connect here (XPUB)
    gateway: str = "tcp://127.0.0.1:5560"
    risk: str = "tcp://127.0.0.1:5561"
    orders: str = "tcp://127.0.0.1:5562"
    portfolio: str = "tcp://127.0.0.1:5563"
    monitor: str = "tcp://127.0.0.1:5564"
    #: binding anything but loopback must be explicit (and needs CURVE)
    allow_non_loopback: bool = False
    heartbeat_interval_s: Positive = 0.5
    heartbeat_liveness: Annotated[int, Meta(ge=1)] = 3
    request_timeout_s: Positive = 2.0
    request_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    send_hwm: Annotated[int, Meta(ge=1)] = 100_000
    recv_hwm: Annotated[int, Meta(ge=1)] = 100_000
    #: fairness of every service (bus/admission.py): requests in flight in total and per caller; long waits
    #: (WaitOrder) in total and per caller. Over a limit: Rejected(busy) at once.
    max_inflight: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_INFLIGHT
    max_inflight_per_caller: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_INFLIGHT_PER_CALLER
    max_waits: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_WAITS
    max_waits_per_caller: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_WAITS_PER_CALLER
    curve: CurveConfig = CurveConfig()

    def service_endpoint(self, name: str) -> str:
        try:
            return getattr(self, name)
        except AttributeError:
            raise ConfigError(f"bus: no service endpoint named {name!r}") from None


class LoggingConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    #: directory for JSON-lines logs (one file per process); empty = stderr only
    json_dir: str = ""


class SimConfigSection(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The embedded TWS simulator started by ``khazad run`` (``run_all.py``) in sim mode."""

    host: str = "127.0.0.1"
    port: Port = 4002
    control_port: Port = 4003
    seed: int = 1
    account: Annotated[str, Meta(pattern=r"^DU\d+$")] = "DU1234567"
    base_currency: Annotated[str, Meta(min_length=3, max_length=3)] = "USD"
    starting_cash: Positive = 1_000_000.0
    market_hours: Literal["always", "exchange", "closed", "overnight"] = "always"
    tick_interval_s: Positive = 0.25
    pacing_limit: Annotated[int, Meta(ge=0)] = 50
    trace: str = ""
    #: fast (acknowledgements and fills at once) or ib (IB-like: tens of milliseconds with a tail, seeded)
    latency: Literal["fast", "ib"] = "fast"
    #: recorded ticks or bars (CSV, or Parquet with pyarrow) that drive quotes and matching; empty = random walk
    replay: str = ""
    replay_speed: Positive = 1.0


class GatewayConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The one process that talks to IB. ``mode``: sim (bundled simulator), paper (DU account), live."""

    mode: Literal["sim", "paper", "live"] = "sim"
    host: str = "127.0.0.1"
    #: 0 = the mode's default (sim: [sim].port, paper: 4002, live: 4001)
    port: Port = 0
    client_id: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 1
    #: TWS/IB Gateway's "Master API client ID" is set to ``client_id``: IB reports every client's orders to it live
    #: (client id 0 gets them anyway). Otherwise other clients' orders are seen when IB lists them (start-up, every
    #: gap, every snapshot and kill sweep)
    master_client_id: bool = False
    #: client id 0 only: bind orders typed into TWS to this client (reqAutoOpenOrders), so they can be cancelled by
    #: id and their updates arrive live
    auto_open_orders: bool = True
    #: the IB account to trade; required in paper and live mode
    account: str = ""
    client_library: Literal["ib_insync", "ib_async"] = "ib_insync"
    connect_timeout_s: Positive = 10.0
    reconnect_initial_s: Positive = 0.5
    reconnect_max_s: Positive = 30.0
    #: IB allows 50 messages/s; keep a margin
    pacing_per_s: Annotated[int, Meta(ge=1, le=10_000)] = 45
    kill_verify_timeout_s: Positive = 10.0
    state_file: str = "state/gateway.json"


class RiskLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pre-trade limits. Global values live in ``[risk.limits]``; ``[risk.strategies.<id>]`` overrides any of them."""

    max_order_quantity: Positive = 10_000
    max_order_notional: Positive = 1_000_000.0
    price_collar_pct: Positive = 5.0
    max_position: Positive = 50_000
    max_gross_exposure: Positive = 5_000_000.0
    max_orders_per_second: Positive = 20
    max_fills_per_window: Annotated[int, Meta(ge=1)] = 200
    fill_window_s: Positive = 60.0
    duplicate_window_s: NonNeg = 1.0
    restricted_symbols: list[str] = []
    min_buying_power_ratio: NonNeg = 1.0
    daily_loss_limit: Positive = 50_000.0


class StrategyLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-strategy overrides: any field left unset takes the global value."""

    max_order_quantity: Positive | None = None
    max_order_notional: Positive | None = None
    price_collar_pct: Positive | None = None
    max_position: Positive | None = None
    max_gross_exposure: Positive | None = None
    max_orders_per_second: Positive | None = None
    max_fills_per_window: Annotated[int, Meta(ge=1)] | None = None
    fill_window_s: Positive | None = None
    duplicate_window_s: NonNeg | None = None
    restricted_symbols: list[str] | None = None
    min_buying_power_ratio: NonNeg | None = None
    daily_loss_limit: Positive | None = None


class RiskConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    limits: RiskLimits = RiskLimits()
    strategies: dict[str, StrategyLimits] = {}
    approval_ttl_s: Positive = 5.0
    #: file holding the approval signing key shared with the gateway (KHAZAD_APPROVAL_KEY overrides)
    approval_key_file: str = "secrets/approval.key"
    stale_data_s: Positive = 30.0
    reject_rate_window_s: Positive = 60.0
    reject_rate_min_orders: Annotated[int, Meta(ge=1)] = 20
    reject_rate_max: Annotated[float, Meta(gt=0, le=1)] = 0.5
    state_file: str = "state/risk.json"
    #: gateway lost IB (or its process went silent): the global trading state the governor moves to
    on_disconnect: Literal["none", "reducing", "halted"] = "reducing"
    #: cancel every working order (EmergencyCancel all) as soon as the gateway is READY again after a disconnect
    cancel_on_disconnect: bool = True
    #: lift the disconnect breaker's own REDUCING/HALTED once the gateway is READY again (never an operator halt)
    resume_after_reconnect: bool = True
    #: how long a check waits for the first tick of a symbol it has no market data for
    market_data_wait_s: Annotated[float, Meta(gt=0, le=10)] = 1.0
    #: an approved order counts as working until the gateway reports it; forgotten after this if it never shows up
    pending_order_ttl_s: Positive = 30.0
    #: the stale-data breaker (an instrument in its trading hours without a tick for stale_data_s) blocks new orders
    #: in it; with this set it also cancels the instrument's resting DAY orders (never GTC or stop orders)
    stale_data_cancels_resting: bool = False
    #: when the daily P&L restarts: "instrument" (IB's per-instrument schedule from the contract details) or one
    #: fixed time for every instrument, "HH:MM Zone" (TWS's global setting, e.g. "17:00 US/Eastern")
    pnl_reset: str = "instrument"
    #: the strategies' books (positions per contract, the day's trades), so carried positions keep their owner
    books_file: str = "state/risk_books.json"
    #: orders on delayed market data (IB's type 3: no real-time subscription): "limit_only" (limit orders pass,
    #: collared on the delayed price; market and stop orders are refused: risk.delayed_data), "block", "allow"
    delayed_data: Literal["limit_only", "block", "allow"] = "limit_only"
    #: IB's what-if margin check for orders of at least this notional (base currency); 0 = off
    margin_check_notional: NonNeg = 0.0
    #: refuse (risk.margin) when IB's post-trade excess liquidity (equity with loan after minus maintenance margin
    #: after) would fall below this (base currency)
    margin_floor: NonNeg = 0.0
    #: bound for IB's what-if answer (no answer in time: risk.margin, fail closed); keep it below
    #: orders.risk_timeout_s minus risk.market_data_wait_s
    margin_wait_s: Annotated[float, Meta(gt=0, le=10)] = 1.0
    #: an answer is reused for the same order terms for this long
    margin_cache_s: NonNeg = 5.0


class OrdersConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    journal: str = "state/orders.sqlite"
    #: fail closed after this; above risk.market_data_wait_s (the first order on a symbol waits for a price)
    risk_timeout_s: Positive = 1.5
    gateway_timeout_s: Positive = 2.0
    #: an order journalled but interrupted before reaching IB (crash) waits this long for the strategy to retry
    #: the same client_order_id, then becomes GatewayRejected ("interrupted before submission")
    orphan_timeout_s: Positive = 60.0
    #: per-attempt bound for the gateway's GetSnapshot during reconciliation (retried in the background)
    snapshot_timeout_s: Positive = 5.0
    #: new placements beyond this many in flight are refused ``Rejected(busy)`` at once (overload is refused, never
    #: queued: each one waits behind the others for the risk governor and the gateway)
    max_placements_in_flight: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_PLACEMENTS_IN_FLIGHT


class PortfolioConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reconcile_interval_s: Positive = 30.0
    drift_tolerance: NonNeg = 1e-6
    #: the per-strategy books, every execution and the intraday samples (SQLite, WAL, mode 0600)
    store: str = "state/portfolio.sqlite"
    #: when a trading day starts: "HH:MM[:SS] Zone" (books roll, "today's" fills, the daily report)
    trading_day: str = DEFAULT_TRADING_DAY
    #: how often equity and exposure are sampled into the store (the daily report's curves)
    sample_interval_s: Positive = 60.0


Severity = Literal["info", "warning", "critical"]


class _AlertRoute(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """One destination for alerts (``[[monitor.alert_routes]]``), with its own threshold, retries and rate."""

    #: shown in logs and metrics (default: ``<kind>-<index>``)
    name: str = ""
    #: alerts below this severity are not sent on this route
    min_severity: Severity = "warning"
    #: further attempts after a failed one, waiting backoff_s, 2 x backoff_s, ... (capped at 60 s)
    retries: Annotated[int, Meta(ge=0, le=10)] = 3
    backoff_s: Positive = 1.0
    #: at most this many alerts per minute on this route (more are dropped and counted)
    rate_limit_per_min: Annotated[int, Meta(ge=1, le=10_000)] = 30
    #: alerts waiting for delivery on this route (more are dropped and counted)
    queue_size: Annotated[int, Meta(ge=1, le=10_000)] = 100
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 5.0

    @property
    def kind(self) -> str:
        return str(type(self).__struct_config__.tag)

    def label(self, index: int) -> str:
        return self.name or f"{self.kind}-{index}"


class WebhookRoute(_AlertRoute, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="webhook"):
    """The alert as JSON, POSTed to ``url``. The URL (it carries a token) may come from ``url_env`` (an
    environment variable) or ``url_file`` instead; only its host is ever logged."""

    url: str = ""
    url_env: str = ""
    url_file: str = ""


class SlackRoute(WebhookRoute, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="slack"):
    """A Slack incoming webhook (``{"text": ..., "blocks": [...]}``)."""


class TeamsRoute(WebhookRoute, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="teams"):
    """A Microsoft Teams incoming webhook: an Adaptive Card message (Workflows webhooks) or a legacy
    MessageCard (Office 365 connector webhooks)."""

    card: Literal["adaptive", "messagecard"] = "adaptive"


class EmailRoute(_AlertRoute, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="email"):
    """Email over SMTP. The password comes from ``password_env`` or ``password_file``, never from this file."""

    smtp_host: str
    smtp_port: Port = 587
    #: upgrade the connection with STARTTLS (required when the server offers it and this is true)
    starttls: bool = True
    #: implicit TLS from the first byte (port 465); excludes starttls
    ssl: bool = False
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    sender: str
    recipients: Annotated[list[str], Meta(min_length=1)]
    subject_prefix: str = "[khazad]"


class CommandRoute(_AlertRoute, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="command"):
    """A shell command, the alert as JSON on its stdin."""

    command: str


AlertRoute = WebhookRoute | SlackRoute | TeamsRoute | EmailRoute | CommandRoute


class MonitorConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    audit_db: str = "state/audit.sqlite"
    metrics_host: str = "127.0.0.1"
    #: Prometheus metrics over HTTP; 0 disables
    metrics_port: Port = 9108
    #: shell command run on every critical alert (alert JSON on stdin); empty = none. Kept as a contract: it is
    #: the route ``{kind = "command", min_severity = "critical"}``
    alert_command: str = ""
    #: JSON POST of every critical alert: the route ``{kind = "webhook", min_severity = "critical"}``
    alert_webhook: str = ""
    #: ``[[monitor.alert_routes]]``: Slack, Teams, email, webhooks, commands (see docs/running.md)
    alert_routes: list[AlertRoute] = []
    #: default: every actor of the registry (bus/registry.py)
    expected_actors: list[str] = msgspec.field(default_factory=lambda: list(registry.ACTOR_NAMES))


class StrategyConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The bundled example strategy (examples/)."""

    enabled: bool = True
    strategy_id: str = "example"
    symbol: str = "AAPL"
    quantity: Positive = 10
    interval_s: Positive = 5.0


class KhazadConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file. ``run_dir`` is where state, logs, secrets and keys go (relative to the config file)."""

    run_dir: str = "run"
    bus: BusConfig = BusConfig()
    logging: LoggingConfig = LoggingConfig()
    sim: SimConfigSection = SimConfigSection()
    gateway: GatewayConfig = GatewayConfig()
    risk: RiskConfig = RiskConfig()
    orders: OrdersConfig = OrdersConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    monitor: MonitorConfig = MonitorConfig()
    strategy: StrategyConfig = StrategyConfig()
    #: set by the loader: the directory relative paths are resolved against
    base_dir: str = ""

    def path(self, relative: str) -> Path:
        """Resolve a path from the config: absolute stays, relative is under run_dir."""
        p = Path(relative).expanduser()
        if p.is_absolute():
            return p
        return self.run_path / p

    @property
    def run_path(self) -> Path:
        rd = Path(self.run_dir).expanduser()
        return rd if rd.is_absolute() else Path(self.base_dir or ".") / rd
