"""Trading-state updates turned into what people see: a gauge per ``source:scope``, the epoch, an audit row per
change and an alert per change that matters (a first ACTIVE is no news)."""

from __future__ import annotations

from actors.monitor import audit as A
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.reporting import AlertDesk
from actors.monitor.trading import ACTIVE, TradingBoard, Update


class TradingChanges:
    """Records the :class:`~actors.monitor.trading.Update` s the :class:`TradingBoard` accepted."""

    def __init__(self, board: TradingBoard, desk: AlertDesk, metrics: MonitorMetrics) -> None:
        self.board = board
        self.desk = desk
        self.metrics = metrics

    def record(self, updates: list[Update]) -> None:
        """Metrics for every accepted trading-state update; an audit row and an alert for each change."""
        for u in updates:
            self.metrics.set_trading(u.source, u.scope, u.state)
            self.metrics.epoch.set(self.board.epoch)
            if not u.changed:
                continue
            self.desk.audit(
                A.TRADING_STATE,
                source=u.source,
                scope=u.scope,
                summary=f"{u.previous or '?'} -> {u.state}{f': {u.reason}' if u.reason else ''}",
                detail={"epoch": u.epoch, "origin": u.origin, "reason": u.reason},
            )
            if u.previous is None and u.state == ACTIVE:
                continue
            if u.state == ACTIVE:
                self.desk.raise_alert(
                    "trading_active", "info", f"{u.source}: trading ACTIVE again for {u.scope}", scope=u.scope
                )
            else:
                self.desk.raise_alert(
                    "trading_" + u.state.lower(),
                    "warning",
                    f"{u.source}: trading {u.state} for {u.scope}{f' ({u.reason})' if u.reason else ''}",
                    scope=u.scope,
                )
