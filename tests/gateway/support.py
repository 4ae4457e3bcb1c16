"""Test support for the gateway: an event recorder on the bus, a harness around the gateway process, orders."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from bus.approval import load_approval_key, sign
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    GetStatus, Instrument, Kill, OrderSpec, OrderStatusEvent, Resume, SubmitAck, SubmitOrder,
)
from bus.pubsub import Publisher, SyncSubscriber
from sim.protocol import FrameDecoder, build_client_handshake, build_start_api, split_fields
from bus.reqrep import SyncClient
from tests.helpers import ActorProcess, cfg_of, eventually, wait_serving

#: Bound for one gateway request in tests (a kill sweep of 200 orders included).
CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
APPROVAL_TTL_S = 60.0
#: AAPL trades near 190 in the simulator: a BUY limit at this price stays working.
FAR_BELOW = 100.0


def gateway_extra(port: int, **overrides: Any) -> str:
    """A ``[gateway]`` section for write_config(extra=...) pointing at a simulator port."""
    values: dict[str, Any] = {
        "mode": "sim", "port": port, "client_id": 7, "reconnect_initial_s": 0.1, "reconnect_max_s": 0.5,
        "connect_timeout_s": 5.0, "kill_verify_timeout_s": 15.0,
    }
    values.update(overrides)
    lines = ["[gateway]"]
    for k, v in values.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def order(coid: str | None = None, *, symbol: str = "AAPL", side: str = "BUY", qty: float = 10,
          order_type: str = "MKT", limit: float | None = None, stop: float | None = None, strategy: str = "s1",
          outside_rth: bool = False, tif: str = "DAY", sec_type: str = "STK") -> OrderSpec:
    return OrderSpec(strategy_id=strategy, client_order_id=coid or uuid.uuid4().hex[:12],
                     instrument=Instrument(symbol=symbol, sec_type=sec_type), side=side,  # type: ignore[arg-type]
                     quantity=qty, order_type=order_type, limit_price=limit, stop_price=stop,  # type: ignore
                     outside_rth=outside_rth, tif=tif)  # type: ignore[arg-type]


class EventRecorder:
    """Records every event on some topic prefixes from a background thread; tests wait on it with timeouts."""

    def __init__(self, ctx: zmq.Context, cfg: KhazadConfig, topics: list[str]) -> None:
        self.sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, topics, name="test-recorder")
        probe = Publisher(ctx, cfg.bus.proxy_frontend, Stamper("test-recorder-probe"))
        try:
            probe.wait_ready_sync(cfg.bus.proxy_backend)
            self.sub.wait_ready(probe)
        finally:
            probe.close()
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.sub.recv(0.05)
            if item is None:
                continue
            topic, env = item
            with self._cond:
                self.events.append((topic, env.body))
                self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close()

    def bodies(self, prefix: str = "", kind: type | None = None) -> list[Any]:
        with self._cond:
            return [b for t, b in self.events if t.startswith(prefix) and (kind is None or isinstance(b, kind))]

    def wait_for(self, predicate: Callable[["EventRecorder"], Any], timeout: float = 15.0,
                 what: str = "events") -> Any:
        """Block until ``predicate(self)`` is truthy (woken by every new event); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last events: "
                                         f"{[(t, type(b).__name__) for t, b in self.events[-15:]]}")
                self._cond.wait(left)

    # -- order helpers ---------------------------------------------------------------------------------------

    def statuses(self, order_ref: str) -> list[OrderStatusEvent]:
        with self._cond:
            return [b for t, b in self.events if isinstance(b, OrderStatusEvent) and b.order_ref == order_ref]

    def status_names(self, order_ref: str) -> list[str]:
        return [e.status for e in self.statuses(order_ref)]

    def wait_status(self, order_ref: str, status: str, timeout: float = 15.0) -> OrderStatusEvent:
        def find(rec: "EventRecorder") -> OrderStatusEvent | None:
            return next((e for e in rec.statuses(order_ref) if e.status == status), None)
        return self.wait_for(find, timeout, what=f"{order_ref} {status} (saw {self.status_names(order_ref)})")


class GatewayHarness:
    """The gateway as a real process plus a request client signing approvals like the risk governor."""

    def __init__(self, ctx: zmq.Context, config_path: Path, processes: list[ActorProcess], sim: Any,
                 recorder: EventRecorder | None, *, env: dict[str, str] | None = None) -> None:
        self.ctx = ctx
        self.config_path = config_path
        self.cfg = cfg_of(config_path)
        self.processes = processes
        self.sim = sim
        self.recorder = recorder
        self.env = env
        self.key = load_approval_key(self.cfg, {})
        self.proc: ActorProcess | None = None
        self.client = SyncClient(ctx, self.cfg.bus.gateway, service="gateway", stamper=Stamper("test-gw-client"),
                                 timeout_s=CALL_TIMEOUT_S, retries=0)

    def start(self) -> ActorProcess:
        self.proc = ActorProcess("actors.gateway", self.config_path, name="gateway", env=self.env).start()
        self.processes.append(self.proc)
        return self.proc

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Any:
        wait_serving(self.ctx, self.cfg.bus.gateway, self.proc, timeout)
        return eventually(lambda: (s := self.status()).connection == "READY" and s, timeout,
                          message=lambda: f"gateway READY; log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    def call(self, body: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        return self.client.call(body, timeout_s=timeout_s, retries=0)

    def status(self) -> Any:
        return self.call(GetStatus(), timeout_s=5.0)

    def approve(self, spec: OrderSpec, *, is_modify: bool = False) -> Any:
        return sign(self.key, spec, ttl_s=APPROVAL_TTL_S, is_modify=is_modify)

    def submit(self, spec: OrderSpec) -> Any:
        return self.call(SubmitOrder(order=spec, approval=self.approve(spec)))

    def kill(self, scope: str = "all", kill_id: str | None = None, reason: str = "test kill") -> Any:
        return self.call(Kill(kill_id=kill_id or uuid.uuid4().hex[:16], scope=scope, reason=reason,  # type: ignore
                              origin="test"))

    def resume(self, scope: str = "all") -> Any:
        return self.call(Resume(scope=scope, reason="test resume", origin="test"))  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.close()


WORKING_AT_SIM = ("PreSubmitted", "Submitted", "PendingCancel")


def sim_orders(state: dict) -> list[dict]:
    return list(state["orders"].values())


def sim_order(state: dict, order_ref: str) -> dict | None:
    return next((o for o in sim_orders(state) if o["orderRef"] == order_ref), None)


def working_at_sim(state: dict) -> list[dict]:
    return [o for o in sim_orders(state) if o["status"] in WORKING_AT_SIM]


def requests_named(state: dict, name: str) -> list[dict]:
    return [r for r in state["request_log"] if r["name"] == name]


def squat(port: int, client_id: int) -> socket.socket:
    """Take a client id with a raw TWS connection (what a lingering session after a restart looks like)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(build_client_handshake(157, 176))
    dec = FrameDecoder(expect_prefix=False)
    frames: list[bytes] = []
    while not frames:
        frames += dec.feed(s.recv(4096))
    s.sendall(build_start_api(client_id))
    while not any(split_fields(f)[0] == "9" for f in frames[1:]):
        frames += dec.feed(s.recv(4096))
    return s


def place_working(gateway, sim, n: int, *, strategy: str = "s1", symbol: str = "AAPL",
                  limit: float = FAR_BELOW, prefix: str = "k") -> list[str]:
    refs = []
    for i in range(n):
        spec = order(f"{prefix}{i}", strategy=strategy, symbol=symbol, order_type="LMT", limit=limit)
        ack = gateway.submit(spec)
        assert isinstance(ack, SubmitAck), ack
        refs.append(spec.order_ref)
    sim.wait_for(lambda s: sum(1 for o in s["orders"].values() if o["orderRef"] in set(refs)
                               and o["status"] in ("PreSubmitted", "Submitted")) == n, timeout=30,
                 what=f"{n} working orders at the simulator")
    return refs
