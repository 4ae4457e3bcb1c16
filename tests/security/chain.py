"""The real actors as real processes for the security tests, and the attacker's tools.

:func:`running_chain` starts the proxy, the TWS simulator (in a thread, real socket, real-time clock), and the
actors a test module asks for (gateway, risk, orders, portfolio, monitor), each as ``python -m actors.<name>``,
and waits until they serve (the gateway READY, risk and orders reconciled). Everything is stopped on exit.

The attacker's tools send what an honest client never would: raw frames over a plain DEALER (:class:`RawDealer`),
envelopes encoded without validation (:func:`raw_request`). :func:`rss_bytes` reads a process's resident memory
(``VmRSS`` in ``/proc/<pid>/status``), the figure the memory bounds are stated in.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zmq

from bus import registry, topics
from bus.codec import Stamper, reply_codec
from bus.config import KhazadConfig
from bus.messages import SCHEMA_VERSION, GetRiskState, GetStatus, Ping, Pong
from bus.sync_client import SyncClient
from bus.security import OPERATOR_KEY
from tests.support.clients import RoutedClient, security, server_key, sync_client, sync_subscriber
from tests.support.config import REPO, cfg_of, config_of_endpoint, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually

#: Starting the chain on a loaded 2-core machine (a passing wait returns at once).
READY_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 90.0

CHAIN_EXTRA = """
[gateway]
mode = "sim"
port = {sim_port}
client_id = {client_id}
reconnect_initial_s = 0.1
reconnect_max_s = 0.5
connect_timeout_s = 5.0

[orders]
risk_timeout_s = 2.0
gateway_timeout_s = 4.0
"""


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Chain:
    """A running chain: its configuration, the simulator and the actor processes by name."""

    path: Path
    cfg: KhazadConfig
    sim: Any
    procs: dict[str, ActorProcess]
    ctx: zmq.Context
    clients: list[SyncClient] = field(default_factory=list)

    def client(self, service: str, *, sender: str = "sec-test", timeout_s: float = 5.0, retries: int = 0,
               key: str = OPERATOR_KEY) -> SyncClient:
        """A client of ``service`` with the key ``key`` (the operator's unless the test plays another role)."""
        cl = sync_client(self.ctx, self.cfg, service, key=key, stamper=Stamper(sender), timeout_s=timeout_s,
                         retries=retries)
        self.clients.append(cl)
        return cl

    def call(self, service: str, body: Any, *, timeout_s: float = 5.0, sender: str = "sec-test") -> Any:
        """One call with the key of the role that sends ``body``: order entry (CheckOrder, SubmitOrder,
        AmendOrder) as the order manager, anything else as the operator."""
        cl = RoutedClient(self.ctx, self.cfg, service, stamper=Stamper(sender), timeout_s=timeout_s, retries=0)
        try:
            return cl.call(body)
        finally:
            cl.close()

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.log()[-3000:]}" for n, p in self.procs.items())

    def khazad(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``python -m cli --config <chain config> ...`` (the real CLI, as a process)."""
        return subprocess.run([sys.executable, "-m", "cli", "--config", str(self.path), *args], capture_output=True,
                              text=True, timeout=timeout_s, cwd=REPO)


def wait_proxy(ctx: zmq.Context, cfg: KhazadConfig, proc: ActorProcess) -> None:
    sub = sync_subscriber(ctx, cfg, [topics.heartbeat("proxy")], name="sec-proxy-ready")
    try:
        eventually(lambda: sub.recv(0.05), 20, message=lambda: f"proxy heartbeat; log:\n{proc.log()}")
    finally:
        sub.close()


@contextmanager
def running_chain(tmp: Path, actors: tuple[str, ...], *, extra: str = "", client_id: int = 31,
                  seed: int = 3) -> Iterator[Chain]:
    """The proxy, the simulator and ``actors`` (in start order), serving and ready; stopped on exit."""
    from sim.testing import running_sim

    with running_sim(seed=seed, clock="realtime", tick_interval=0.1) as sim:
        expected = ", ".join(f'"{n}"' for n in ("proxy", *actors))
        path = write_config(tmp, extra=CHAIN_EXTRA.format(sim_port=sim.port, client_id=client_id) + extra)
        # the monitor expects exactly what runs here (write_config owns the [monitor] table)
        path.write_text(path.read_text().replace("[monitor]\n", f"[monitor]\nexpected_actors = [{expected}]\n", 1))
        cfg = cfg_of(path)
        ctx = zmq.Context()
        procs: dict[str, ActorProcess] = {}
        chain = Chain(path, cfg, sim, procs, ctx)
        try:
            procs["proxy"] = ActorProcess(registry.PROXY.module, path, name="proxy").start()
            wait_proxy(ctx, cfg, procs["proxy"])
            for name in actors:
                procs[name] = ActorProcess(registry.spec(name).module, path, name=name).start()
            for name in actors:
                wait_serving(ctx, cfg.bus.service_endpoint(name), procs[name], READY_TIMEOUT_S)
            if "gateway" in actors:
                gw = chain.client("gateway")
                eventually(lambda: gw.call(GetStatus()).connection == "READY", READY_TIMEOUT_S,
                           message=lambda: f"gateway READY\n{procs['gateway'].log()[-3000:]}")
            if "risk" in actors:
                risk = chain.client("risk")
                eventually(lambda: risk.call(GetRiskState()).ready, READY_TIMEOUT_S,
                           message=lambda: f"risk ready\n{procs['risk'].log()[-3000:]}")
            if "orders" in actors:
                orders = chain.client("orders")
                eventually(lambda: orders.call(GetStatus()).detail.get("ready") == "true", READY_TIMEOUT_S,
                           message=lambda: f"orders ready\n{procs['orders'].log()[-3000:]}")
            yield chain
        finally:
            for cl in chain.clients:
                cl.close()
            for p in reversed(list(procs.values())):
                p.stop()
            ctx.destroy(linger=0)


# ------------------------------------------------------------------------------------------------------------------
# The attacker's tools
# ------------------------------------------------------------------------------------------------------------------

_raw_encoder = msgspec.msgpack.Encoder()


def raw_request(body: Any, *, sender: str = "attacker", request_id: str | None = None,
                deadline_wall_ns: int = 0) -> bytes:
    """An envelope frame encoded without any validation (``body`` may be a struct or plain builtins with a
    ``type`` tag), exactly as a hostile process could send it."""
    env = {
        "v": SCHEMA_VERSION,
        "sender": sender,
        "incarnation": 1,
        "seq": 1,
        "mono_ns": time.monotonic_ns(),
        "wall_ns": time.time_ns(),
        "request_id": uuid.uuid4().hex if request_id is None else request_id,
        "deadline_wall_ns": deadline_wall_ns,
        "body": body,
    }
    return _raw_encoder.encode(env)


def _curve_client(sock: zmq.Socket, endpoint: str, key: str, server: str | None) -> None:
    """CURVE client options for a raw socket to ``endpoint`` with the key ``key`` (the test config that owns the
    endpoint says where the keys are; ``server``: the key the service serves with, by default its actor's)."""
    cfg = config_of_endpoint(endpoint)
    sec = security(cfg, key) if cfg is not None else None
    if sec is None or not sec.enabled:
        return
    assert cfg is not None
    server = server or next(f for f in registry.ENDPOINT_FIELDS if getattr(cfg.bus, f) == endpoint)
    sec.make_client(sock, server_key(sec, server))


class RawDealer:
    """A plain DEALER to one service: sends raw frames, reads raw replies (linger 0 on close). It carries the key
    ``key`` (the operator's by default): each key is one caller to a service's admission, so callers that must count
    apart carry different keys."""

    def __init__(self, ctx: zmq.Context, endpoint: str, *, key: str = OPERATOR_KEY, server: str | None = None,
                 sndhwm: int | None = None, rcvhwm: int | None = None, rcvbuf: int | None = None,
                 keepalive: bool = False) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if sndhwm is not None:
            self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self.sock.setsockopt(zmq.RCVBUF, rcvbuf)
        if keepalive:  # ZMTP pings, so the service sees a live peer even while this one reads nothing
            self.sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 600_000)
        _curve_client(self.sock, endpoint, key, server)
        self.sock.connect(endpoint)
        self._replies = reply_codec()

    def send(self, frame: bytes, timeout_s: float = 10.0) -> None:
        if not self.sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
            raise AssertionError("the service did not accept a frame within the bound")
        self.sock.send(frame, zmq.NOBLOCK)

    def recv(self, timeout_s: float) -> Any | None:
        """The next reply's envelope (decoded and validated as a reply), or None when none came in time."""
        if not self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return self.decode(self.sock.recv_multipart()[-1])

    def decode(self, frame: bytes) -> Any:
        """A reply frame as a validated reply envelope (raises DecodeError for anything else)."""
        return self._replies.decode(frame)

    def close(self) -> None:
        self.sock.close(0)


def answers_ping(ctx: zmq.Context, endpoint: str, timeout_s: float = 5.0) -> bool:
    cfg = config_of_endpoint(endpoint)
    assert cfg is not None, f"no test config owns {endpoint}"
    service = next(f for f in registry.ENDPOINT_FIELDS if getattr(cfg.bus, f) == endpoint)
    cl = sync_client(ctx, cfg, service, stamper=Stamper("sec-ping"), timeout_s=timeout_s, retries=0)
    try:
        return isinstance(cl.call(Ping()), Pong)
    finally:
        cl.close()


def settled_rss(pid: int, ctx: zmq.Context, endpoint: str) -> int:
    """RSS once the service has answered a Ping (it has worked through what was queued before it)."""
    assert answers_ping(ctx, endpoint, 20.0), "the service did not answer a Ping"
    return rss_bytes(pid)


