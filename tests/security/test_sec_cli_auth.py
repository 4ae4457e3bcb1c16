"""Issue 14, minor finding: an unauthorized CLI kill must say so, not suggest "is the proxy running?".

Real processes with CURVE on every endpoint (proxy, gateway on the simulator, risk governor); the real CLI as a
process, using a strategy's key (which may not kill): the gateway and the governor refuse the kill, and the
proxy does not forward a strategy's ``control.kill``. The answer must name the refusal, not guess at a dead proxy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import zmq

from bus import messages as m
from bus import registry
from bus.codec import Stamper
from bus.retry import RequestTimeout
from bus.sync_client import SyncClient
from tests.security.chain import READY_TIMEOUT_S, Chain
from tests.support.clients import sync_client
from tests.support.config import REPO, cfg_of, write_config
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually

EXTRA = """
[bus.curve]
enabled = true

[gateway]
mode = "sim"
port = {sim_port}
client_id = 34
reconnect_initial_s = 0.1
reconnect_max_s = 0.5
"""


def _operator_client(chain: Chain, service: str) -> SyncClient:
    cl = sync_client(chain.ctx, chain.cfg, service, stamper=Stamper("operator"), timeout_s=2.0, retries=0)
    chain.clients.append(cl)
    return cl


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    from sim.testing import running_sim

    tmp = tmp_path_factory.mktemp("sec-cli-auth")
    with running_sim(seed=5, clock="realtime", tick_interval=0.1) as sim:
        path = write_config(tmp, extra=EXTRA.format(sim_port=sim.port))
        cfg = cfg_of(path)  # write_config made every actor's, the operator's and momo's key and the allow-list
        ctx = zmq.Context()
        procs: dict[str, ActorProcess] = {}
        c = Chain(path, cfg, sim, procs, ctx)
        try:
            for spec in (registry.PROXY, registry.GATEWAY, registry.RISK):
                procs[spec.name] = ActorProcess(spec.module, path, name=spec.name).start()
            gw, risk = _operator_client(c, "gateway"), _operator_client(c, "risk")

            def ready() -> bool:
                for name, p in procs.items():
                    assert p.alive(), f"{name} died:\n{p.log()[-3000:]}"
                try:
                    return (gw.call(m.GetStatus()).connection == "READY"
                            and isinstance(risk.call(m.GetRiskState()), m.RiskStateReply))
                except RequestTimeout:
                    return False

            eventually(ready, READY_TIMEOUT_S, message=lambda: c.logs())
            yield c
        finally:
            for cl in c.clients:
                cl.close()
            for p in reversed(list(procs.values())):
                p.stop()
            ctx.destroy(linger=0)


def test_kill_with_a_key_that_may_not_kill_names_the_refusal_and_never_blames_the_proxy(chain: Chain) -> None:
    env = dict(os.environ, KHAZAD__BUS__CURVE__KEY_NAME="momo")
    env.pop("KHAZAD_CONFIG", None)
    out = subprocess.run([sys.executable, "-m", "cli", "--config", str(chain.path), "kill", "--reason", "test"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=90)
    text = out.stdout + out.stderr
    assert out.returncode == 4, (out.returncode, text[-3000:])  # refused
    assert "is the proxy running" not in text, text[-3000:]
    assert "unauthorized" in text or "not authorized" in text, text[-3000:]
