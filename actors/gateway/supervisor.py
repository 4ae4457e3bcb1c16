"""The connection to IB over its lifetime: connect with backoff, check the accounts, reconcile, READY, and again
after every loss. The states and their transitions are :mod:`actors.gateway.connection`'s table; each change is
published on ``state.connection``.

A configuration contradiction discovered at run time (the server's accounts contradict the mode) is fatal: the
gateway stops with exit 78 and never falls back to another target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway.convert import error_text
from actors.gateway.ib import IbSession
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.outbox import Outbox
from actors.gateway.pnl import PnLFeed
from actors.gateway.reconcile import Reconciler
from actors.gateway.settings import GatewaySettings, check_accounts
from bus.config import EXIT_CONFIG, ConfigError
from bus.messages import ConnectionStateEvent, ConnectionStateName


class ConnectionSupervisor:
    """Runs the connection loop and answers IB's system codes; ``stop(exit_code)`` ends the actor."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        session: IbSession,
        conn: cs.ConnectionTracker,
        reconciler: Reconciler,
        market_data: MarketDataFeed,
        pnl: PnLFeed,
        outbox: Outbox,
        stop: Callable[[int], None],
    ) -> None:
        self.settings = settings
        self.session = session
        self.conn = conn
        self.reconciler = reconciler
        self.market_data = market_data
        self.pnl = pnl
        self.outbox = outbox
        self._stop = stop
        self._disconnected = asyncio.Event()
        self._connect_errors: list[tuple[int, str]] = []
        self._reconcile_task: asyncio.Task[None] | None = None

    # -- state -----------------------------------------------------------------------------------------------

    def publish_state(self) -> None:
        c = self.conn
        self.outbox.connection(
            ConnectionStateEvent(
                state=c.state,
                ib_code=c.ib_code,
                message=c.message,
                mode=self.settings.mode,
                server_version=self.session.server_version(),
                accounts=list(c.accounts),
            )
        )

    def _set(self, state: ConnectionStateName, *, ib_code: int | None = None, message: str = "") -> None:
        changed = self.conn.move(state, ib_code=ib_code, message=message)
        if changed or ib_code is not None:
            log = logger.warning if state in (cs.DISCONNECTED, cs.STOPPED) else logger.info
            log(
                "gateway: connection {}{}{}",
                state,
                f" (IB {ib_code})" if ib_code else "",
                f": {message}" if message else "",
            )
            self.publish_state()

    def _fatal(self, message: str) -> None:
        """A configuration contradiction discovered at run time: stop for good (exit 78, no restart loop)."""
        logger.critical("gateway: configuration error: {}", message)
        self.outbox.alert("critical", f"gateway stopped: {message}")
        self.shutdown(message)
        self._stop(EXIT_CONFIG)

    def shutdown(self, message: str) -> None:
        """STOPPED (published once) and the socket closed."""
        if self.conn.state != cs.STOPPED:
            self.conn.move(cs.STOPPED, message=message)
            self.publish_state()
        self.session.disconnect()

    # -- the loop --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, reconcile, wait for the loss, again; until cancelled or a fatal configuration error."""
        self._disconnected = asyncio.Event()
        s = self.settings
        attempt = 0
        while True:
            self._disconnected.clear()
            self._connect_errors.clear()
            self._set(cs.CONNECTING, message=f"{s.host}:{s.port} client id {s.client_id}")
            self.reconciler.connecting()
            try:
                await self.session.connect(
                    s.host,
                    s.port,
                    s.client_id,
                    timeout=s.connect_timeout_s,
                    account=s.account,
                    check_accounts=lambda a: check_accounts(s, a),
                )
                if not self.session.is_connected():
                    raise ConnectionError("socket closed while synchronising")
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:  # the server contradicts the mode: stop for good, never fall back
                self._fatal(str(exc))
                return
            except Exception as exc:  # refused, reset, timeout, 326: retry with backoff (never another target)
                self.session.disconnect()
                code = self._connect_errors[-1][0] if self._connect_errors else None
                delay = cs.backoff_delay(attempt, s.reconnect_initial_s, s.reconnect_max_s)
                attempt += 1
                why = (
                    f"client id {s.client_id} still in use (IB 326)" if code == cs.CLIENT_ID_IN_USE else error_text(exc)
                )
                self._set(
                    cs.DISCONNECTED,
                    ib_code=code,
                    message=f"connect to {s.host}:{s.port} failed: {why}; retry {attempt} in {delay:.2f}s",
                )
                await asyncio.sleep(delay)  # backoff timer between attempts, not synchronisation
                continue
            if s.client_id == 0 and not s.auto_open_orders:
                self.session.set_auto_open_orders(False)  # the library binds TWS orders when it connects as 0
            try:
                self.conn.accounts = self.session.managed_accounts()
                self.conn.account = check_accounts(s, self.conn.accounts)
            except ConfigError as exc:
                self._fatal(str(exc))
                return
            attempt = 0
            self.conn.connects += 1
            if self.conn.connects > 1:
                self.conn.reconnects += 1
            self._set(
                cs.CONNECTED, message=f"server version {self.session.server_version()}, account {self.conn.account}"
            )
            await self.reconcile("connect" if self.conn.connects == 1 else "reconnect")
            await self._disconnected.wait()
            if self._reconcile_task is not None:
                self._reconcile_task.cancel()

    async def reconcile(self, reason: str) -> None:
        """Re-synchronise with IB after (re)connecting or a 1101/1102, then open for orders (READY)."""
        try:
            self._set(cs.RECONCILING, message=reason)
        except cs.IllegalTransition:
            return
        t0 = time.monotonic()
        try:
            report = await self.reconciler.reconcile(reason)
        except (TimeoutError, ConnectionError, OSError) as exc:
            logger.warning("gateway: reconciliation interrupted: {}", error_text(exc))
            return
        if not self.session.is_connected() or self.conn.state != cs.RECONCILING:
            return
        self.outbox.reconciliation(report)
        logger.info(
            "gateway: reconciled in {:.0f} ms after {}: {} open order(s), {} replayed fill(s), missing {}, "
            "unknown {}, drift {}",
            (time.monotonic() - t0) * 1000,
            reason,
            report.open_orders,
            report.replayed_fills,
            report.missing_orders,
            report.unknown_orders,
            report.position_drift,
        )
        if not report.ok:
            self.outbox.alert("warning", f"reconciliation after {reason} found differences: {report.detail}")
        self._set(cs.READY, message=f"reconciled after {reason}")

    # -- the library's events --------------------------------------------------------------------------------

    def on_disconnected(self) -> None:
        dropped = self.session.sender.clear()
        self.market_data.on_disconnected()
        self.pnl.on_disconnected()
        if dropped:
            logger.warning("gateway: {} queued message(s) dropped with the connection", dropped)
        self._disconnected.set()
        if self.conn.state not in (cs.DISCONNECTED, cs.STOPPED, cs.CONNECTING):
            self._set(cs.DISCONNECTED, message="connection to IB closed; reconnecting")

    def on_system_code(self, code: int, message: str) -> None:
        if self.conn.state in (cs.CONNECTING, cs.DISCONNECTED) and code not in cs.FARM_CODES:
            self._connect_errors.append((code, message))
        if code == cs.CLIENT_ID_IN_USE:
            logger.warning(
                "gateway: IB 326: client id {} already in use ({}); will retry", self.settings.client_id, message
            )
        elif code == cs.CONNECTIVITY_LOST:
            if self.conn.state in (cs.READY, cs.RECONCILING, cs.CONNECTED):
                self._set(cs.DISCONNECTED, ib_code=code, message=f"TWS lost IB's servers: {message}")
        elif code in (cs.RESTORED_DATA_LOST, cs.RESTORED_DATA_KEPT):
            if self.session.is_connected() and self.conn.state in (cs.DISCONNECTED, cs.READY):
                if code == cs.RESTORED_DATA_LOST:
                    self.market_data.drop_streams()
                self.conn.ib_code = code
                self._reconcile_task = asyncio.get_running_loop().create_task(
                    self.reconcile(f"IB {code}"), name="gateway.reconcile"
                )
        elif code in cs.FARM_CODES:
            self.conn.move(self.conn.state, ib_code=code, message=message)
            self.publish_state()
        else:
            logger.info("gateway: IB system message {}: {}", code, message)
