"""The truth tests' system: the TWS simulator (``python -m sim``, manual clock), the bus proxy, the gateway, the risk
governor and the order manager, each a real process over real sockets; and every view of an order Khazad offers
(the order manager's, risk's exposure, the gateway's snapshot, ``khazad orders --json``) next to the simulator's
ground truth (its control API's ``state``)."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

from bus import topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    CancelOrder, GatewaySnapshot, GetOrder, GetRiskState, GetSnapshot, GetStatus, Instrument, ModifyOrder, OrderReply,
    OrderSpec, OrderView, PlaceOrder, RiskStateReply, WaitOrder,
)
from bus.sync_client import SyncClient
from tests.support.clients import sync_client, sync_subscriber
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually

#: Bounds (generous: several engineers share this 2-core machine). A passing wait returns at once.
READY_TIMEOUT_S = 40.0
CALL_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 10.0
#: AAPL trades near 190 in the simulator: a BUY limit here rests, inside risk's 5 % price collar.
RESTING_BUY = 185.0
#: Statuses at the simulator of an order that can still trade.
SIM_WORKING = frozenset({"PreSubmitted", "Submitted", "PendingCancel"})

TRUTH_CONFIG = """
[orders]
risk_timeout_s = 3.0
gateway_timeout_s = 5.0
[risk]
approval_ttl_s = 30
# the tests place many orders in a minute; the reject-rate breaker is another test's business
reject_rate_min_orders = 1000
"""
#: risk without its "cancel everything after a reconnect" breaker (a test that looks at orders across a gap)
KEEP_ORDERS_ACROSS_GAPS = "cancel_on_disconnect = false\n"


def gateway_section(port: int, client_id: int) -> str:
    return (f'[gateway]\nmode = "sim"\nport = {port}\nclient_id = {client_id}\nreconnect_initial_s = 0.1\n'
            f'reconnect_max_s = 0.5\nconnect_timeout_s = 5.0\nkill_verify_timeout_s = 10.0\n')


def spec(strategy: str, *, qty: float = 1.0, limit: float | None = RESTING_BUY, symbol: str = "AAPL",
         side: str = "BUY", coid: str | None = None) -> OrderSpec:
    return OrderSpec(strategy_id=strategy, client_order_id=coid or uuid.uuid4().hex[:10],
                     instrument=Instrument(symbol=symbol), side=side, quantity=qty,  # type: ignore[arg-type]
                     order_type="LMT" if limit is not None else "MKT", limit_price=limit)


class Desk:
    """The running system and the views of it (see the module docstring)."""

    def __init__(self, tmp: Path, sim: Any, ctx: zmq.Context, *, client_id: int, extra: str = "") -> None:
        self.tmp = tmp
        self.sim = sim
        self.ctx = ctx
        self.client_id = client_id
        self.config_path = write_config(tmp, extra=TRUTH_CONFIG + extra + gateway_section(sim.port, client_id))
        self.cfg: KhazadConfig = cfg_of(self.config_path)
        self.procs: dict[str, ActorProcess] = {}
        self._clients: list[SyncClient] = []
        self.orders = self._client("orders", "strategy-truth")
        self.gateway = self._client("gateway", "test-truth-gw")
        self.risk = self._client("risk", "test-truth-risk")

    def _client(self, service: str, name: str) -> SyncClient:
        # the operator's key: it may act for every strategy and ask every service (the bus is authenticated)
        cl = sync_client(self.ctx, self.cfg, service, stamper=Stamper(name), timeout_s=CALL_TIMEOUT_S, retries=0)
        self._clients.append(cl)
        return cl

    # -- processes ---------------------------------------------------------------------------------------------

    def _start(self, name: str, module: str) -> ActorProcess:
        p = self.procs[name] = ActorProcess(module, self.config_path, name=name).start()
        return p

    def start(self) -> "Desk":
        proxy = self._start("proxy", "bus.proxy")
        sub = sync_subscriber(self.ctx, self.cfg, [topics.heartbeat("proxy")], name="truth-ready")
        try:
            eventually(lambda: sub.recv(0.05), READY_TIMEOUT_S, message=lambda: f"proxy up; log:\n{proxy.log()}")
        finally:
            sub.close()
        gw = self._start("gateway", "actors.gateway")
        wait_serving(self.ctx, self.cfg.bus.gateway, gw, READY_TIMEOUT_S)
        self.wait_gateway_ready()
        for name in ("risk", "orders"):
            p = self._start(name, f"actors.{name}")
            wait_serving(self.ctx, getattr(self.cfg.bus, name), p, READY_TIMEOUT_S)
        eventually(lambda: self.risk.call(GetRiskState()).ready, READY_TIMEOUT_S, message="risk has its snapshot")
        eventually(lambda: self.orders.call(GetStatus()).detail.get("ready") == "true", READY_TIMEOUT_S,
                   message="the order manager reconciled")
        return self

    def wait_gateway_ready(self) -> None:
        eventually(lambda: self.gateway.call(GetStatus(), timeout_s=3).connection == "READY", READY_TIMEOUT_S,
                   message=lambda: f"gateway READY; log:\n{self.procs['gateway'].log()[-3000:]}")

    def close(self) -> None:
        for cl in self._clients:
            cl.close()
        for p in reversed(list(self.procs.values())):
            p.stop()

    def log(self, name: str) -> str:
        return self.procs[name].log()

    # -- the strategy's actions --------------------------------------------------------------------------------

    def place(self, s: OrderSpec, until: str = "live") -> OrderView:
        reply = self.orders.call(PlaceOrder(order=s))
        assert isinstance(reply, OrderReply), reply
        done = self.orders.call(WaitOrder(strategy_id=s.strategy_id, client_order_id=s.client_order_id,
                                          until=until, timeout_s=CALL_TIMEOUT_S))  # type: ignore[arg-type]
        assert isinstance(done, OrderReply), done
        return done.order

    def place_working(self, s: OrderSpec) -> dict:
        """Place and wait until IB has it Submitted (the simulator's truth and the order manager agree)."""
        self.place(s)
        eventually(lambda: self.order(s).status == "Submitted", SETTLE_TIMEOUT_S,
                   message=lambda: f"{s.order_ref} Submitted (is {self.order(s).status})")
        return self.sim_order(s.order_ref)

    def cancel(self, s: OrderSpec, reason: str = "test cancel") -> Any:
        return self.orders.call(CancelOrder(strategy_id=s.strategy_id, client_order_id=s.client_order_id,
                                            reason=reason))

    def modify(self, s: OrderSpec, **changes: Any) -> Any:
        return self.orders.call(ModifyOrder(strategy_id=s.strategy_id, client_order_id=s.client_order_id, **changes))

    # -- Khazad's views ----------------------------------------------------------------------------------------

    def order(self, s: OrderSpec) -> OrderView:
        reply = self.orders.call(GetOrder(strategy_id=s.strategy_id, client_order_id=s.client_order_id))
        assert isinstance(reply, OrderReply), reply
        return reply.order

    def risk_state(self) -> RiskStateReply:
        reply = self.risk.call(GetRiskState())
        assert isinstance(reply, RiskStateReply), reply
        return reply

    def snapshot(self) -> GatewaySnapshot:
        reply = self.gateway.call(GetSnapshot(), timeout_s=CALL_TIMEOUT_S)
        assert isinstance(reply, GatewaySnapshot), reply
        return reply

    def cli_orders(self, *args: str) -> dict:
        """``khazad orders --json <args>`` (the CLI's own code, in this process)."""
        from cli.main import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--config", str(self.config_path), "orders", "--json", *args])
        assert code == 0, (code, out.getvalue())
        return json.loads(out.getvalue())

    # -- the simulator's ground truth ---------------------------------------------------------------------------

    def sim_state(self) -> dict:
        return self.sim.state()

    def sim_order(self, order_ref: str) -> dict:
        found = [o for o in self.sim_state()["orders"].values() if o["orderRef"] == order_ref]
        assert len(found) == 1, (order_ref, found)
        return found[0]

    def sim_working_qty(self, symbol: str = "AAPL", side: str = "BUY") -> float:
        """What is still working at IB on one side of a symbol, every client's orders and TWS's included."""
        return sum(o["remaining"] for o in self.sim_state()["orders"].values()
                   if o["symbol"] == symbol and o["action"] == side and o["status"] in SIM_WORKING)

    def sim_position(self, symbol: str = "AAPL") -> float:
        return sum(p["position"] for p in self.sim_state()["positions"] if p["symbol"] == symbol)


@contextmanager
def running_desk(tmp: Path, *, client_id: int = 7, before: Callable[[Any], None] | None = None,
                 extra: str = "", **sim_overrides: Any) -> Iterator[Desk]:
    """The whole desk for a module (see :class:`Desk`); ``before(sim)`` runs before any Khazad process starts.
    Everything it started is stopped on exit."""
    from sim.testing import running_sim_process

    ctx = zmq.Context()
    try:
        with running_sim_process(**{"seed": 7, **sim_overrides}) as sim:
            if before is not None:
                before(sim)
            desk = Desk(tmp, sim, ctx, client_id=client_id, extra=extra)
            try:
                desk.start()
                sim.call("advance", seconds=1.0)  # quotes for risk's checks
                yield desk
            finally:
                desk.close()
    finally:
        ctx.destroy(linger=0)
