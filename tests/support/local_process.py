"""What a process on the same host can do to a running system, as the attack tests need it: clients, publishers
and subscribers with a given key (or with none), the CLI, the simulator's ground truth.

A process uses the key a strategy process would have: ``client_security(cfg, key)``, which is None when the bus
runs without CURVE (then the "attacker" simply connects, as any local process could). The same helpers therefore
describe the attack on a plain bus and on the authenticated one; the tests assert what must hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import Instrument, OrderSpec
from bus.pubsub import Publisher, SyncSubscriber
from bus.retry import RequestTimeout
from bus.sync_client import SyncClient
from bus.security import client_security
from tests.support.config import REPO
from tests.support.waiting import eventually

#: A refused handshake means no reply at all: the bound for "cannot connect" (a connected service answers a Ping
#: in milliseconds).
REFUSED_TIMEOUT_S = 1.5
CLI_TIMEOUT_S = 90.0
#: Order statuses at the simulator that mean "still working".
SIM_WORKING = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})


def keyed(cfg: KhazadConfig, key: str | None) -> tuple[Any, Any]:
    """(security, a function service -> server key) for ``key``; (None, ...) for no key or a plain bus."""
    sec = client_security(cfg, key) if key else None
    return sec, (lambda service: sec.server_key(service) if sec is not None else None)


def client(ctx: zmq.Context, cfg: KhazadConfig, service: str, key: str | None, *, timeout_s: float = 5.0,
           endpoint: str | None = None) -> SyncClient:
    sec, server = keyed(cfg, key)
    return SyncClient(ctx, endpoint or cfg.bus.service_endpoint(service), service=service,
                      stamper=Stamper(f"local-{key or 'nokey'}-{uuid.uuid4().hex[:4]}"), timeout_s=timeout_s,
                      retries=0, security=sec, server_key=server(service))


def publisher(ctx: zmq.Context, cfg: KhazadConfig, key: str | None, sender: str) -> Publisher:
    """A publisher with ``key``, its ready handshake done (a plain one cannot do it on a CURVE bus: not awaited)."""
    sec, server = keyed(cfg, key)
    pub = Publisher(ctx, cfg.bus.proxy_frontend, Stamper(sender), security=sec, server_key=server("proxy"))
    if key or not cfg.bus.curve.enabled:
        pub.wait_ready_sync(cfg.bus.proxy_backend, security=sec, server_key=server("proxy"))
    return pub


def subscriber(ctx: zmq.Context, cfg: KhazadConfig, key: str | None, topics: list[str],
               ready: bool = True) -> SyncSubscriber:
    sec, server = keyed(cfg, key)
    sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, topics, name=f"local-{key or 'nokey'}", security=sec,
                         server_key=server("proxy"))
    if ready:
        helper = publisher(ctx, cfg, key, f"ready-{key}")
        try:
            sub.wait_ready(helper)
        finally:
            helper.close()
    return sub


def answers(cl: SyncClient, body: Any) -> Any:
    """The reply, or None when nothing answered within the client's timeout (no connection)."""
    try:
        return cl.call(body)
    except RequestTimeout:
        return None


def seen_before_marker(pub: Publisher, observer: SyncSubscriber, topic: str, body: Any, marker_topic: str,
                       marker: Any) -> list[tuple[str, Any]]:
    """Publish ``body`` on ``topic`` then ``marker`` from the same socket, and return what ``observer`` got up to
    the marker. The proxy forwards one publisher's messages in order, so once the marker is here a forwarded
    ``body`` would be too: an empty result is proof it was dropped."""
    pub.publish(topic, body)
    pub.publish(marker_topic, marker)
    got: list[tuple[str, Any]] = []

    def marker_arrived() -> bool:
        while (item := observer.recv(0.05)) is not None:
            if item[0] == marker_topic and item[1].body == marker:
                return True
            got.append((item[0], item[1].body))
        return False

    eventually(marker_arrived, message="the marker through the proxy")
    return [(t, b) for t, b in got if t == topic]


def order(strategy: str, coid: str | None = None, *, qty: float = 1, limit: float | None = None,
          side: str = "BUY") -> OrderSpec:
    return OrderSpec(strategy_id=strategy, client_order_id=coid or uuid.uuid4().hex[:12],
                     instrument=Instrument(symbol="AAPL"), side=side, quantity=qty,  # type: ignore[arg-type]
                     order_type="LMT" if limit else "MKT", limit_price=limit)  # type: ignore[arg-type]


def khazad(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``khazad --config <config> <args>`` as an operator runs it."""
    full = dict(os.environ, **(env or {}))
    full.pop("KHAZAD_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "cli", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S, cwd=REPO, env=full)


def sim_refs(state: dict[str, Any]) -> set[str]:
    return {o["orderRef"] for o in state["orders"].values()}


def sim_working(state: dict[str, Any], ref: str) -> bool:
    return any(o["orderRef"] == ref and o["status"] in SIM_WORKING for o in state["orders"].values())
