"""Prometheus metrics of the whole system, served over HTTP by the monitor (prometheus-client, own registry).

Names (all prefixed ``khazad_``): ``actor_up{actor}``, ``actor_heartbeat_age_seconds{actor}``,
``actor_rss_bytes{actor}``, ``actor_deaths_total{actor}``, ``gateway_connection_state{state}`` (enum),
``trading_state{source,scope,state}`` (enum: 1 for the current state), ``trading_epoch``,
``order_events_total{status}``, ``rejects_total{source}``, ``fills_total{strategy}``, ``bus_gaps_total``,
``bus_missed_messages_total``, ``alerts_total{severity,kind}``, ``control_events_total{kind}``,
``reconciliations_total{actor,ok}``, ``alert_deliveries_total{route,outcome}`` (delivered, failed,
dropped_overflow, dropped_rate), ``order_rejections_total{source,code}`` (risk's check code, IB's error code),
histograms ``risk_check_seconds``, ``order_ack_seconds`` (an order's first status to its first working or final
one at IB) and ``bus_delivery_seconds{channel}`` (publisher's stamp to the monitor), and from the portfolio's
snapshots ``account_net_liquidation``, ``account_realized_pnl``, ``account_unrealized_pnl``,
``exposure_gross``, ``strategy_pnl{strategy}``, ``strategy_realized_pnl{strategy}``.

The dashboard in ``deploy/grafana/`` queries these names (a test checks them against a running system's scrape).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from loguru import logger
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from bus.messages import PortfolioSnapshot

CONNECTION_STATES = ["CONNECTING", "CONNECTED", "RECONCILING", "READY", "DISCONNECTED", "STOPPED", "UNKNOWN"]
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
#: Latency buckets (seconds): sub-millisecond hops on one host up to IB round trips.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MonitorMetrics:
    """The monitor's metric objects in their own registry (so tests and two monitors never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.actor_up = Gauge("khazad_actor_up", "1 if the actor's heartbeat is current", ["actor"], registry=r)
        self.heartbeat_age = Gauge(
            "khazad_actor_heartbeat_age_seconds", "Seconds since the actor's last heartbeat", ["actor"], registry=r
        )
        self.rss = Gauge("khazad_actor_rss_bytes", "Resident memory of the actor's process", ["actor"], registry=r)
        self.deaths = Counter("khazad_actor_deaths", "Times an actor was declared dead", ["actor"], registry=r)
        self.connection = Enum(
            "khazad_gateway_connection_state", "The gateway's connection to IB", states=CONNECTION_STATES, registry=r
        )
        self.connection.state("UNKNOWN")
        self.trading = Gauge(
            "khazad_trading_state",
            "1 for the current trading state of a source and scope",
            ["source", "scope", "state"],
            registry=r,
        )
        self.epoch = Gauge("khazad_trading_epoch", "Latest trading-state epoch seen", registry=r)
        self.order_events = Counter(
            "khazad_order_events", "Order status events from the gateway", ["status"], registry=r
        )
        self.rejects = Counter("khazad_rejects", "Orders rejected, by who rejected them", ["source"], registry=r)
        self.fills = Counter("khazad_fills", "Executions", ["strategy"], registry=r)
        self.gaps = Counter("khazad_bus_gaps", "Sequence gaps reported by subscribers", registry=r)
        self.missed = Counter("khazad_bus_missed_messages", "Messages lost in reported gaps", registry=r)
        self.alerts = Counter("khazad_alerts", "Alerts raised", ["severity", "kind"], registry=r)
        self.control = Counter(
            "khazad_control_events", "Control events (kill, resume, emergency cancel, ...)", ["kind"], registry=r
        )
        self.reconciliations = Counter("khazad_reconciliations", "Reconciliation reports", ["actor", "ok"], registry=r)
        self.alert_deliveries = Counter(
            "khazad_alert_deliveries", "Alert deliveries per route, by outcome", ["route", "outcome"], registry=r
        )
        self.order_rejections = Counter(
            "khazad_order_rejections",
            "Orders rejected, by who and why (risk check code, IB error code)",
            ["source", "code"],
            registry=r,
        )
        self.risk_check = Histogram(
            "khazad_risk_check_seconds",
            "Risk governor's pre-trade check duration",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.order_ack = Histogram(
            "khazad_order_ack_seconds",
            "An order's first status event to its first working (or final) status",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bus_delivery = Histogram(
            "khazad_bus_delivery_seconds",
            "Publisher's stamp to the monitor's receipt, by channel",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.net_liquidation = Gauge(
            "khazad_account_net_liquidation", "IB's net liquidation value (base currency)", registry=r
        )
        self.realized = Gauge("khazad_account_realized_pnl", "Realized P&L of the account (IB's)", registry=r)
        self.unrealized = Gauge("khazad_account_unrealized_pnl", "Unrealized P&L of IB's positions", registry=r)
        self.gross_exposure = Gauge("khazad_exposure_gross", "Sum of the absolute market values held", registry=r)
        self.strategy_pnl = Gauge(
            "khazad_strategy_pnl", "A strategy's P&L today (realized + open)", ["strategy"], registry=r
        )
        self.strategy_realized = Gauge(
            "khazad_strategy_realized_pnl", "A strategy's realized P&L today", ["strategy"], registry=r
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def set_trading(self, source: str, scope: str, state: str) -> None:
        for s in TRADING_STATES:
            self.trading.labels(source=source, scope=scope, state=s).set(1 if s == state else 0)

    def set_connection(self, state: str) -> None:
        self.connection.state(state if state in CONNECTION_STATES else "UNKNOWN")

    def set_portfolio(self, snap: PortfolioSnapshot) -> None:
        """Gauges from a ``portfolio.snapshot``."""
        if snap.net_liquidation is not None:
            self.net_liquidation.set(snap.net_liquidation)
        self.realized.set(snap.realized_pnl)
        self.unrealized.set(snap.unrealized_pnl)
        self.gross_exposure.set(sum(abs(p.market_value or 0.0) for p in snap.positions))
        for strategy, pnl in snap.strategy_pnl.items():
            self.strategy_pnl.labels(strategy=strategy).set(pnl)
        for strategy, realized in snap.strategy_realized.items():
            self.strategy_realized.labels(strategy=strategy).set(realized)

    def text(self) -> str:
        """The exposition text (what a scrape returns)."""
        return generate_latest(self.registry).decode()

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port (0 = disabled)."""
        if port == 0:
            return 0
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_address[1])
        logger.info("monitor: Prometheus metrics on http://{}:{}/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
