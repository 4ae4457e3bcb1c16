"""Real processes for tests: an actor (``python -m <module> --config <path>``) with its output in a file, the
waits that say it is serving (Ping), READY (the gateway) or ready (an actor's ``ready`` status detail), the bus
proxy, and the /proc checks the system tests use to prove nothing is left running.

Every process a test starts goes into the ``processes`` fixture's list, which stops (then kills) them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import zmq

from bus import registry, topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import GetStatus, Ping
from bus.retry import RequestTimeout
from bus.sync_client import SyncClient
from bus.security import OPERATOR_KEY
from tests.support.clients import security, server_key, sync_client, sync_subscriber
from tests.support.config import REPO, cfg_of, config_of_endpoint
from tests.support.waiting import eventually

#: How long a started actor process may take to answer its first Ping.
PROCESS_READY_TIMEOUT_S = 20.0
PROCESS_STOP_TIMEOUT_S = 5.0
#: How long the proxy may take to relay its first heartbeat.
PROXY_READY_TIMEOUT_S = 15.0
#: How long the gateway may take to connect to the simulator and reconcile (READY).
GATEWAY_READY_TIMEOUT_S = 30.0


class ActorProcess:
    """A real actor process (``python -m <module> --config <path>``) with its output captured to a file."""

    def __init__(self, module: str, config: Path, *, name: str | None = None, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.module = module
        self.config = config
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = config.parent / f"{self.name}.log"
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("KHAZAD_CONFIG", None)
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ActorProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, "--config", str(self.config), *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = PROCESS_STOP_TIMEOUT_S) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(PROCESS_STOP_TIMEOUT_S)


def ping(ctx: zmq.Context, endpoint: str, timeout_s: float = 0.5, *, cfg: KhazadConfig | None = None,
         key: str = OPERATOR_KEY, server: str | None = None) -> Any:
    """One Ping to a service; returns the reply body or None if it did not answer. On the authenticated bus the
    client uses ``key`` from ``cfg`` (by default the test config that owns ``endpoint``) and expects the server key
    of ``server`` (by default the actor whose endpoint it is; a test actor serving another's endpoint names
    itself)."""
    cfg = cfg or config_of_endpoint(endpoint)
    sec = security(cfg, key) if cfg is not None else None
    if server is None and cfg is not None:
        server = next((f for f in registry.ENDPOINT_FIELDS if getattr(cfg.bus, f) == endpoint), None)
    cl = SyncClient(ctx, endpoint, service="ping", stamper=Stamper("test-ping"), timeout_s=timeout_s, retries=0,
                    security=sec, server_key=server_key(sec, server) if server else None)
    try:
        return cl.call(Ping())
    except RequestTimeout:
        return None
    finally:
        cl.close()


def wait_serving(ctx: zmq.Context, endpoint: str, proc: ActorProcess | None = None,
                 timeout: float = PROCESS_READY_TIMEOUT_S, *, server: str | None = None) -> Any:
    """Wait until the service at ``endpoint`` answers Ping (failing early if its process died); ``server`` as in
    :func:`ping`."""

    def check() -> Any:
        if proc is not None and not proc.alive():
            assert proc.proc is not None
            raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()[-4000:]}")
        return ping(ctx, endpoint, 0.3, server=server)

    return eventually(check, timeout, message=lambda: f"{endpoint} did not answer Ping"
                      + (f"; log:\n{proc.log()[-3000:]}" if proc else ""))


def wait_proxy(ctx: zmq.Context, cfg: KhazadConfig, proc: ActorProcess | None = None,
               timeout: float = PROXY_READY_TIMEOUT_S) -> None:
    """Wait until the proxy relays its own heartbeat (it is forwarding)."""
    sub = sync_subscriber(ctx, cfg, [topics.heartbeat("proxy")], name="test-proxy-ready")
    try:
        eventually(lambda: sub.recv(0.05), timeout,
                   message=lambda: "proxy heartbeat" + (f"; log:\n{proc.log()}" if proc else ""))
    finally:
        sub.close()


def start_proxy(config_path: Path, processes: list[ActorProcess], ctx: zmq.Context, *,
                env: dict[str, str] | None = None, name: str = "proxy") -> ActorProcess:
    """A bus proxy process, returned once a subscriber sees its heartbeat through it."""
    proc = ActorProcess(registry.PROXY.module, config_path, name=name, env=env).start()
    processes.append(proc)
    wait_proxy(ctx, cfg_of(config_path), proc)
    return proc


def start_actor(name: str, config_path: Path, processes: list[ActorProcess], ctx: zmq.Context, *,
                env: dict[str, str] | None = None, timeout: float = PROCESS_READY_TIMEOUT_S) -> ActorProcess:
    """The registry's actor ``name`` as a real process, returned once it answers Ping."""
    spec = registry.spec(name)
    proc = ActorProcess(spec.module, config_path, name=name, env=env).start()
    processes.append(proc)
    wait_serving(ctx, cfg_of(config_path).bus.service_endpoint(spec.endpoint), proc, timeout)
    return proc


def status_client(ctx: zmq.Context, cfg: KhazadConfig, service: str, timeout_s: float = 3.0) -> SyncClient:
    """A client for status questions to one service, with the operator's key (the caller closes it)."""
    return sync_client(ctx, cfg, service, stamper=Stamper(f"test-{service}"), timeout_s=timeout_s, retries=0)


def wait_gateway_ready(client: SyncClient, proc: ActorProcess | None = None,
                       timeout: float = GATEWAY_READY_TIMEOUT_S) -> Any:
    """Until the gateway reports READY (connected to IB and reconciled); returns its status."""
    return eventually(lambda: (s := client.call(GetStatus(), timeout_s=3.0)).connection == "READY" and s, timeout,
                      message=lambda: "gateway READY" + (f"; log:\n{proc.log()[-3000:]}" if proc else ""))


def start_gateway(config_path: Path, processes: list[ActorProcess], ctx: zmq.Context, *,
                  env: dict[str, str] | None = None, timeout: float = GATEWAY_READY_TIMEOUT_S) -> ActorProcess:
    """The gateway as a real process, returned once it is READY with the simulator its config points at."""
    proc = start_actor(registry.GATEWAY.name, config_path, processes, ctx, env=env, timeout=timeout)
    client = status_client(ctx, cfg_of(config_path), registry.GATEWAY.name)
    try:
        wait_gateway_ready(client, proc, timeout)
    finally:
        client.close()
    return proc


def start_ready(name: str, config_path: Path, processes: list[ActorProcess], ctx: zmq.Context, *,
                env: dict[str, str] | None = None, timeout: float = GATEWAY_READY_TIMEOUT_S) -> ActorProcess:
    """The risk governor or the order manager as a real process, returned once it is ready (see
    :func:`wait_ready`)."""
    proc = start_actor(name, config_path, processes, ctx, env=env, timeout=timeout)
    client = status_client(ctx, cfg_of(config_path), name)
    try:
        wait_ready(client, name, timeout)
    finally:
        client.close()
    return proc


def wait_ready(client: SyncClient, what: str = "service", timeout: float = GATEWAY_READY_TIMEOUT_S) -> Any:
    """Until an actor's status says ``ready`` (the risk governor has the gateway's snapshot; the order manager has
    reconciled with it): the one readiness wait for both."""
    return eventually(lambda: (s := client.call(GetStatus())).detail.get("ready") == "true" and s, timeout,
                      message=f"{what} ready")


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid, it identifies
    one process even after the pid is recycled."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
