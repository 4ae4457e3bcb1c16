"""The SDK and the CLI on the CURVE bus (the default): each uses its own key pair (a strategy's is named after its
strategy id, the CLI's is ``operator``), so services see the authenticated identity, and the proxy lets their
publishes through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bus import topics
from bus.config import KhazadConfig, load_config
from bus.messages import Ack, CancelReport, Kill, PlaceOrder
from bus.security import Security, keys_dir
from cli.main import main
from sdk import KhazadClient
from tests.support.clients import sync_subscriber
from tests.support.config import write_config
from tests.support.doubles.order_manager import OrderManagerDouble
from tests.support.doubles.services import FakeService
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually


@pytest.fixture
def curve_proxy(config_path: Path, cfg: KhazadConfig, processes: list[ActorProcess], zctx: Any) -> ActorProcess:
    """The real proxy with CURVE, ready once the operator key receives its heartbeat."""
    p = ActorProcess("bus.proxy", config_path, name="proxy").start()
    processes.append(p)
    sub = sync_subscriber(zctx, cfg, [topics.heartbeat("proxy")], name="curve-proxy-ready")  # the operator's key
    try:
        eventually(lambda: sub.recv(0.05), 15, message=lambda: f"proxy heartbeat; log:\n{p.log()}")
    finally:
        sub.close()
    return p


@pytest.fixture
def curve_fakes(cfg: KhazadConfig) -> Any:
    started: list[FakeService] = []

    def make(service: str, handler: Any) -> FakeService:
        svc = FakeService(cfg.bus.service_endpoint(service), service, handler,
                          security=Security.for_process(cfg, service)).start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


def test_sdk_on_curve_bus_is_identified_by_its_strategy_key(cfg, curve_proxy: ActorProcess, curve_fakes) -> None:
    om = curve_fakes("orders", OrderManagerDouble())
    with KhazadClient("cs1", config=cfg) as c:
        v = c.place_limit_order("AAPL", "BUY", 1, 100.0)
        assert c.wait_for_order(v.spec.client_order_id, "done", timeout=2).status == "Filled"
    assert len(om.of_type(PlaceOrder)) == 1
    assert set(om.user_ids) == {"strategy:cs1"}


def test_cli_kill_on_curve_bus_uses_the_operator_key(config_path, cfg, curve_proxy: ActorProcess, curve_fakes,
                                                     capsys) -> None:
    gw = curve_fakes("gateway", lambda body: CancelReport(command_id=body.kill_id, scope=body.scope,
                                                         trading_state="HALTED", epoch=1, cancelled=0, remaining=0,
                                                         confirmed=True))
    risk = curve_fakes("risk", lambda body: Ack())
    assert main(["--config", str(config_path), "kill", "--reason", "curve test", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bus"]["status"] == "broadcast"  # the proxy let the operator publish control.kill
    eventually(lambda: gw.of_type(Kill) and risk.of_type(Kill), 5, message="kill at gateway and risk")
    assert gw.user_ids == ["operator:operator"] and risk.user_ids == ["operator:operator"]


def test_cli_without_its_operator_key_exits_78_before_sending(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path)
    cfg = load_config(path, env={})
    (keys_dir(cfg) / "operator.key_secret").unlink()  # this host has no operator key
    assert main(["--config", str(path), "kill", "--reason", "x"]) == 78
    err = capsys.readouterr().err
    assert "operator" in err and "KILL NOT SENT" in err
