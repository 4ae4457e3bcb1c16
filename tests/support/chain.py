"""The actor chain over the TWS simulator, for end-to-end tests: the proxy, the real gateway (ib_insync against the
simulator's socket), the risk governor and, on request, the order manager and the portfolio, each a real process
over real ZeroMQ sockets. ``running_chain()`` owns every process and socket it starts and stops them on exit.

The test plays the order manager through :class:`Chain` (``check``, ``submit``, ``place``) or goes through the real
one with the SDK (``chain.client(strategy)``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bus import registry, topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    Approval,
    CheckOrder,
    GetRiskState,
    GetStatus,
    Instrument,
    OrderSpec,
    RiskDecision,
    RiskStateReply,
    SubmitAck,
    SubmitOrder,
)
from sdk import KhazadClient
from tests.support.clients import RoutedClient, sync_subscriber
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually

#: Starting the chain on a loaded 2-core machine.
READY_TIMEOUT_S = 45.0
CALL_TIMEOUT_S = 15.0
#: One order's way through risk, the gateway, the simulator and back.
ORDER_TIMEOUT_S = 20.0
#: Order statuses at the simulator that mean "still working".
SIM_WORKING = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})
#: Checks that did not look at the order yet (the first tick or the contract is on its way).
WARMING = frozenset({"risk.no_market_data", "risk.not_qualified", "risk.no_fx_rate"})

CHAIN_TOML = """
[gateway]
mode = "sim"
port = {sim_port}
client_id = 9
reconnect_initial_s = 0.1
reconnect_max_s = 0.5
connect_timeout_s = 5.0
kill_verify_timeout_s = 10.0

[orders]
risk_timeout_s = 4.0
gateway_timeout_s = 5.0

[risk]
approval_ttl_s = 30
market_data_wait_s = 3.0
{risk}
"""


def spec(instrument: Instrument | str, side: str = "BUY", qty: float = 1, *, strategy: str = "e2e",
         limit: float | None = None, stop: float | None = None, tif: str = "DAY",
         round_to_tick: bool = False) -> OrderSpec:
    inst = Instrument(symbol=instrument) if isinstance(instrument, str) else instrument
    order_type = "STP LMT" if limit is not None and stop is not None else "LMT" if limit is not None else \
        "STP" if stop is not None else "MKT"
    return OrderSpec(strategy_id=strategy, client_order_id=uuid.uuid4().hex[:12], instrument=inst,
                     side=side, quantity=qty, order_type=order_type, limit_price=limit,  # type: ignore[arg-type]
                     stop_price=stop, tif=tif, round_to_tick=round_to_tick)  # type: ignore[arg-type]


@dataclass
class Chain:
    """A running chain: config, simulator handle, processes and the test's clients."""

    config_path: Path
    cfg: KhazadConfig
    sim: Any
    ctx: zmq.Context
    procs: dict[str, ActorProcess]
    _clients: list[Any] = field(default_factory=list)

    def service(self, name: str) -> RoutedClient:
        """A client of service ``name`` as the test plays it: order entry (``CheckOrder``, ``SubmitOrder``,
        ``AmendOrder``) with the order manager's key, everything else with the operator's."""
        cl = RoutedClient(self.ctx, self.cfg, name, stamper=Stamper(f"test-{name}-{uuid.uuid4().hex[:4]}"),
                          timeout_s=CALL_TIMEOUT_S, retries=0)
        self._clients.append(cl)
        return cl

    def client(self, strategy: str) -> KhazadClient:
        """An SDK client (started; closed with the chain) with the strategy's own key (``strategy`` must be one of
        tests.support.keys.TEST_STRATEGIES, or given to write_config)."""
        c = KhazadClient(strategy, config=self.cfg).__enter__()
        self._clients.append(c)
        return c

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.log()[-2500:]}" for n, p in self.procs.items())

    # -- the order manager's part ----------------------------------------------------------------------------

    def check(self, order: OrderSpec) -> RiskDecision:
        d = self.risk.call(CheckOrder(order=order))
        assert isinstance(d, RiskDecision), d
        return d

    def decided(self, make: Any, timeout: float = ORDER_TIMEOUT_S) -> RiskDecision:
        """The decision on an order once risk has its contract and a price (``make()`` builds a fresh order for
        every attempt)."""
        return eventually(lambda: (d := self.check(make())).code not in WARMING and d, timeout,
                          message=lambda: f"a decision beyond {sorted(WARMING)}\n{self.logs()}")

    def submit(self, order: OrderSpec, approval: Approval) -> Any:
        return self.gateway.call(SubmitOrder(order=order, approval=approval))

    def place(self, order: OrderSpec) -> SubmitAck:
        d = self.check(order)
        assert d.approved, d
        ack = self.submit(order, d.approval)  # type: ignore[arg-type]
        assert isinstance(ack, SubmitAck), ack
        return ack

    def risk_state(self) -> RiskStateReply:
        st = self.risk.call(GetRiskState())
        assert isinstance(st, RiskStateReply), st
        return st

    # -- the simulator's ground truth ------------------------------------------------------------------------

    def sim_order(self, order_ref: str) -> dict | None:
        return next((o for o in self.sim.state()["orders"].values() if o["orderRef"] == order_ref), None)

    def working_at_sim(self, order_ref: str) -> bool:
        o = self.sim_order(order_ref)
        return o is not None and o["status"] in SIM_WORKING

    def quote(self, local_symbol: str) -> dict:
        return self.sim.state()["quotes"][local_symbol]

    def mid(self, local_symbol: str) -> float:
        q = self.quote(local_symbol)
        return (q["bid"] + q["ask"]) / 2

    def position(self, local_symbol: str) -> float:
        return sum(p["position"] for p in self.sim.state()["positions"] if p["localSymbol"] == local_symbol)


def _wait_proxy(ctx: zmq.Context, cfg: KhazadConfig, proc: ActorProcess) -> None:
    sub = sync_subscriber(ctx, cfg, [topics.heartbeat("proxy")], name="chain-proxy-ready")
    try:
        eventually(lambda: sub.recv(0.05), 15, message=lambda: f"proxy heartbeat; log:\n{proc.log()}")
    finally:
        sub.close()


@contextmanager
def running_chain(tmp: Path, sim: Any, *, extra: str = "", risk: str = "",
                  actors: tuple[str, ...] = ("gateway", "risk"), strategies: tuple[str, ...] = ()) -> Iterator[Chain]:
    """Start the proxy and ``actors`` (in this order) against ``sim``; wait until the gateway is READY, risk has its
    snapshot and the order manager is ready. ``risk``: more keys of the ``[risk]`` section; ``extra``: more TOML;
    ``strategies``: strategy ids (keys) beyond tests.support.keys.TEST_STRATEGIES."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp, extra=CHAIN_TOML.format(sim_port=sim.port, risk=risk) + extra, strategies=strategies)
    cfg = cfg_of(path)
    ctx = zmq.Context()
    chain = Chain(path, cfg, sim, ctx, {})
    try:
        chain.procs["proxy"] = ActorProcess(registry.PROXY.module, path, name="proxy").start()
        _wait_proxy(ctx, cfg, chain.procs["proxy"])
        for name in actors:
            chain.procs[name] = ActorProcess(registry.spec(name).module, path, name=name).start()
        for name in actors:
            wait_serving(ctx, cfg.bus.service_endpoint(name), chain.procs[name], READY_TIMEOUT_S)
        chain.gateway = chain.service("gateway")  # type: ignore[attr-defined]
        chain.risk = chain.service("risk")  # type: ignore[attr-defined]
        eventually(lambda: chain.gateway.call(GetStatus()).connection == "READY", READY_TIMEOUT_S,  # type: ignore
                   message=lambda: f"gateway READY\n{chain.logs()}")
        if "risk" in actors:
            eventually(lambda: chain.risk_state().ready, READY_TIMEOUT_S, message=lambda: f"risk ready\n{chain.logs()}")
        if "orders" in actors:
            orders = chain.service("orders")
            eventually(lambda: orders.call(GetStatus()).detail.get("ready") == "true", READY_TIMEOUT_S,
                       message=lambda: f"orders ready\n{chain.logs()}")
        yield chain
    finally:
        for cl in reversed(chain._clients):
            cl.close()
        for p in reversed(list(chain.procs.values())):
            p.stop()
        ctx.destroy(linger=0)
