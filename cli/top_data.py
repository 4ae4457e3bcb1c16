"""``khazad top``'s data: one frame (:class:`Dashboard`) and the clients that fetch it (:class:`Fetcher`).

Data comes from three services, each asked with a short bound so a dead one only blanks its panel: the monitor
(``GetSystemStatus``), the portfolio (``GetAccount``) and the order manager (``ListOrders open``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from bus.config import KhazadConfig
from bus.messages import (
    AccountReply,
    GetAccount,
    GetSystemStatus,
    ListOrders,
    OrderListReply,
    OrderView,
    PortfolioSnapshot,
    SystemStatusReply,
)

#: Per-service bound for one dashboard query (a dead service must not freeze the screen).
QUERY_TIMEOUT_S = 0.6


@dataclass
class Dashboard:
    """One frame's data; ``errors`` names the services that did not answer."""

    mode: str = ""
    status: SystemStatusReply | None = None
    account: PortfolioSnapshot | None = None
    orders: list[OrderView] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    now_wall: float = 0.0
    message: str = ""
    confirm_kill: bool = False


class Fetcher:
    """Long-lived clients to the three services (one zmq context for the dashboard's life)."""

    def __init__(self, cfg: KhazadConfig, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        import zmq

        from bus.codec import Stamper
        from bus.sync_client import SyncClient

        self.cfg = cfg
        self.ctx = zmq.Context()
        from bus.security import OPERATOR_KEY, client_security

        security = client_security(cfg, OPERATOR_KEY)
        stamper = Stamper(f"top-{os.getpid()}")

        def client(service: str) -> SyncClient:
            key = security.server_key(service) if security is not None and security.enabled else None
            return SyncClient(
                self.ctx,
                cfg.bus.service_endpoint(service),
                service=service,
                stamper=stamper,
                timeout_s=timeout_s,
                retries=0,
                security=security,
                server_key=key,
            )

        self.clients = {name: client(name) for name in ("monitor", "portfolio", "orders")}

    def _ask(self, service: str, body: Any, expect: type, data: Dashboard) -> Any:
        from bus.retry import RequestTimeout

        try:
            reply = self.clients[service].call(body)
        except RequestTimeout:
            data.errors[service] = "not answering"
            return None
        if not isinstance(reply, expect):
            data.errors[service] = f"{getattr(reply, 'code', type(reply).__name__)}: {getattr(reply, 'reason', '')}"
            return None
        return reply

    def fetch(self) -> Dashboard:
        data = Dashboard(mode=self.cfg.gateway.mode, now_wall=time.time())
        data.status = self._ask("monitor", GetSystemStatus(), SystemStatusReply, data)
        acc = self._ask("portfolio", GetAccount(), AccountReply, data)
        data.account = acc.snapshot if acc is not None else None
        orders = self._ask("orders", ListOrders(filter="open"), OrderListReply, data)
        data.orders = orders.orders if orders is not None else None
        return data

    def close(self) -> None:
        for cl in self.clients.values():
            cl.close()
        self.ctx.destroy(linger=0)
