"""The gateway as a real process for its own tests (``tests/gateway``), with a request client that signs approvals
the way the risk governor does, and a helper that fills the simulator with working orders through it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import zmq

from bus.approval import load_approval_key, sign
from bus.codec import Stamper
from bus.messages import GetStatus, Kill, OrderSpec, Resume, SubmitAck, SubmitOrder
from tests.support.builders import order
from tests.support.clients import RoutedClient
from tests.support.config import cfg_of
from tests.support.events import EventRecorder
from tests.support.processes import ActorProcess, wait_gateway_ready, wait_serving

#: Bound for one gateway request in tests (a kill sweep of 200 orders included).
CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
APPROVAL_TTL_S = 60.0
#: AAPL trades near 190 in the simulator: a BUY limit at this price stays working.
FAR_BELOW = 100.0
#: IB's (and the simulator's) conId of AAPL: its topics are md.265598, fill.265598, ...
AAPL_CON_ID = 265598


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
        # the gateway takes orders from the order manager only: this harness stands in for it with its key (order
        # entry) and for an operator (everything else: kills, resumes, cancels, snapshots, status)
        self.client = RoutedClient(ctx, self.cfg, "gateway", stamper=Stamper("test-gw-client"),
                                   timeout_s=CALL_TIMEOUT_S, retries=0)

    def start(self) -> ActorProcess:
        self.proc = ActorProcess("actors.gateway", self.config_path, name="gateway", env=self.env).start()
        self.processes.append(self.proc)
        return self.proc

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Any:
        wait_serving(self.ctx, self.cfg.bus.gateway, self.proc, timeout)
        return wait_gateway_ready(self.client.operator, self.proc, timeout)

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


def place_working(gateway: GatewayHarness, sim: Any, n: int, *, strategy: str = "s1", symbol: str = "AAPL",
                  limit: float = FAR_BELOW, prefix: str = "k") -> list[str]:
    """``n`` limit orders through the gateway, returned once all of them work at the simulator."""
    refs = []
    for i in range(n):
        spec = order(coid=f"{prefix}{i}", strategy=strategy, symbol=symbol, order_type="LMT", limit=limit)
        ack = gateway.submit(spec)
        assert isinstance(ack, SubmitAck), ack
        refs.append(spec.order_ref)
    sim.wait_for(lambda s: sum(1 for o in s["orders"].values() if o["orderRef"] in set(refs)
                               and o["status"] in ("PreSubmitted", "Submitted")) == n, timeout=30,
                 what=f"{n} working orders at the simulator")
    return refs
