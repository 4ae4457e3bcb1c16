"""The authenticated bus with the real actors: identity from the key, not from the message.

Real processes (proxy, gateway, risk governor, order manager) with CURVE on every endpoint, the gateway on the
simulator. A strategy key cannot act as another strategy, cannot kill, cannot reach the gateway's order commands;
an operator key from another process can kill.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus import registry
from bus import messages as m
from bus.approval import load_approval_key, sign
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.registry import ACTOR_NAMES
from bus.reqrep import SyncClient
from bus.security import Security, create_key, keys_dir
from sdk import KhazadClient
from tests.support.builders import order
from tests.support.config import REPO, cfg_of, write_config
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually

READY_TIMEOUT_S = 45.0
ORDER_TIMEOUT_S = 20.0

EXTRA = """
[bus.curve]
enabled = true

[gateway]
mode = "sim"
port = {sim_port}
client_id = 21
reconnect_initial_s = 0.1
reconnect_max_s = 0.5
"""


class Chain:
    def __init__(self, path: Path, cfg: KhazadConfig, sim, procs: dict[str, ActorProcess], ctx: zmq.Context):
        self.path, self.cfg, self.sim, self.procs, self.ctx = path, cfg, sim, procs, ctx

    def client(self, service: str, key: str) -> SyncClient:
        sec = Security.for_process(self.cfg, key)
        return SyncClient(self.ctx, self.cfg.bus.service_endpoint(service), service=service, stamper=Stamper(key),
                          timeout_s=5.0, retries=0, security=sec, server_key=sec.server_key(service))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    from sim.testing import running_sim

    tmp = tmp_path_factory.mktemp("curve-chain")
    with running_sim(seed=5, clock="realtime", tick_interval=0.1) as sim:
        path = write_config(tmp, extra=EXTRA.format(sim_port=sim.port))
        cfg = cfg_of(path)
        for name in ACTOR_NAMES:
            create_key(keys_dir(cfg), name, "actor")
        create_key(keys_dir(cfg), "operator", "operator")
        create_key(keys_dir(cfg), "momo", "strategy")
        create_key(keys_dir(cfg), "other", "strategy")
        ctx = zmq.Context()
        procs: dict[str, ActorProcess] = {}
        try:
            for spec in (registry.PROXY, registry.GATEWAY, registry.RISK, registry.ORDERS):
                procs[spec.name] = ActorProcess(spec.module, path, name=spec.name).start()
            c = Chain(path, cfg, sim, procs, ctx)
            ops = {s: c.client(s, "operator") for s in ("gateway", "risk", "orders")}

            def ready() -> bool:
                for name, p in procs.items():
                    assert p.alive(), f"{name} died:\n{p.log()[-3000:]}"
                try:
                    return (ops["gateway"].call(m.GetStatus()).connection == "READY"
                            and ops["risk"].call(m.GetRiskState()).ready
                            and ops["orders"].call(m.GetStatus()).detail.get("ready") == "true")
                except Exception:  # not serving yet (RequestTimeout) or not the reply type yet
                    return False

            eventually(ready, READY_TIMEOUT_S, message=lambda: "\n".join(
                f"--- {n} ---\n{p.log()[-1500:]}" for n, p in procs.items()))
            for cl in ops.values():
                cl.close()
            yield c
        finally:
            for p in reversed(list(procs.values())):
                p.stop()
            ctx.destroy(linger=0)


def test_strategy_key_trades_for_itself_through_the_authenticated_chain(chain: Chain) -> None:
    with KhazadClient("momo", config=chain.cfg) as c:
        view = c.place_market_order("AAPL", "BUY", 1)
        done = c.wait_for_order(view.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S)
    assert done.status == "Filled"
    refs = [o["orderRef"] for o in chain.sim.state()["orders"].values()]
    assert view.spec.order_ref in refs


def test_strategy_spoofing_another_strategy_is_refused_by_the_order_manager(chain: Chain) -> None:
    reply = chain.client("orders", "momo").call(m.PlaceOrder(order=order("BUY", 1, strategy="other", coid="spoof-1")))
    assert isinstance(reply, m.Rejected) and reply.code == "unauthorized", reply
    refs = [o["orderRef"] for o in chain.sim.state()["orders"].values()]
    assert "other/spoof-1" not in refs


def test_strategy_key_cannot_kill_or_reach_gateway_order_commands(chain: Chain) -> None:
    gw = chain.client("gateway", "momo")
    killed = gw.call(m.Kill(kill_id="k-strategy", reason="not allowed"))
    assert isinstance(killed, m.Rejected) and killed.code == "unauthorized"
    # even with a genuine approval (stolen from the governor's key), the strategy's key may not submit
    spec = order("BUY", 1, strategy="momo", coid="direct-1")
    approval = sign(load_approval_key(chain.cfg), spec, ttl_s=5.0)
    submitted = gw.call(m.SubmitOrder(order=spec, approval=approval))
    assert isinstance(submitted, m.Rejected) and submitted.code == "unauthorized"
    assert "momo/direct-1" not in [o["orderRef"] for o in chain.sim.state()["orders"].values()]
    risk = chain.client("risk", "momo").call(m.SetTradingState(state="ACTIVE", reason="sneaky"))
    assert isinstance(risk, m.Rejected) and risk.code == "unauthorized"


def test_operator_key_from_another_process_kills(chain: Chain) -> None:
    proc = subprocess.run([sys.executable, "-m", "cli", "--config", str(chain.path), "kill", "--reason",
                           "curve operator kill", "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    doc = json.loads(proc.stdout)
    assert doc["confirmed"] and doc["gateway"]["reply"]["trading_state"] == "HALTED"
    status = chain.client("gateway", "operator").call(m.GetStatus())
    assert status.trading_state == "HALTED"
    resume = subprocess.run([sys.executable, "-m", "cli", "--config", str(chain.path), "resume", "--reason",
                             "curve test done"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert resume.returncode == 0, f"{resume.stdout}\n{resume.stderr}"
