"""Is the system up? One look combines supervisord's view of the programs with the monitor's view of the actors
(every expected actor's heartbeat, the gateway READY, a trading state known). ``khazad run`` waits on it; the
tests use the same check."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass

import zmq

from bus.config import KhazadConfig
from bus.messages import GetSystemStatus, SystemStatusReply
from bus.retry import RequestTimeout
from bus.security import OPERATOR_KEY, client_security
from bus.sync_client import SyncClient
from launch.xmlrpc import process_infos

#: Bound for one status request to the monitor during the health wait.
STATUS_TIMEOUT_S = 1.0


@dataclass
class Health:
    """One look's verdict: ``ok``, else what is still ``missing`` and which programs are ``fatal``."""

    ok: bool
    missing: list[str]
    fatal: list[str]


def check_health(
    cfg: KhazadConfig, programs: Iterable[str], rpc: xmlrpc.client.ServerProxy, zctx: zmq.SyncContext
) -> Health:
    """One look: supervisord's ``programs`` (all RUNNING, none FATAL), then the monitor's view of the actors
    (``monitor.expected_actors`` alive) and the gateway's connection (READY, with a trading state)."""
    infos = process_infos(rpc)
    fatal = [n for n, i in infos.items() if i["statename"] == "FATAL"]
    missing = [
        f"{n} ({infos[n]['statename'] if n in infos else 'not configured'})"
        for n in programs
        if n not in infos or infos[n]["statename"] != "RUNNING"
    ]
    # the operator's key (the bus is authenticated: a client without a key gets no connection)
    security = client_security(cfg, OPERATOR_KEY)
    client = SyncClient(
        zctx,
        cfg.bus.monitor,
        service="monitor",
        timeout_s=STATUS_TIMEOUT_S,
        retries=0,
        security=security,
        server_key=security.server_key("monitor") if security is not None else None,
    )
    try:
        status = client.call(GetSystemStatus())
    except RequestTimeout:
        status = None
    finally:
        client.close()
    if not isinstance(status, SystemStatusReply):
        missing.append("monitor status (not answering yet)")
    else:
        alive = {a.name for a in status.actors if a.alive}
        missing += [f"{n} heartbeat" for n in cfg.monitor.expected_actors if n not in alive]
        if status.connection != "READY":
            missing.append(f"gateway connection ({status.connection or 'unknown'})")
        if not status.trading_state:
            missing.append("trading state (not reported yet)")
    return Health(ok=not missing and not fatal, missing=missing, fatal=fatal)
