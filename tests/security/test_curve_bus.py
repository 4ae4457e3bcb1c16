"""CURVE on every tcp endpoint: only allow-listed keys connect, identity comes from the key, roles are enforced."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth

from bus import topics
from bus import messages as m
from bus.codec import Stamper
from bus.config import ConfigError, load_config
from bus.pubsub import Publisher, SyncSubscriber
from bus.registry import ACTOR_NAMES
from bus.reqrep import RequestTimeout, SyncClient
from bus.security import Security, create_key, keys_dir
from tests.support.config import write_config
from tests.support.processes import ActorProcess
from tests.support.programs import ECHO_ACTOR
from tests.support.waiting import eventually

#: A refused CURVE handshake means no reply at all: the bound for "cannot connect".
REFUSED_TIMEOUT_S = 1.0


@pytest.fixture
def curve_config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, extra="\n[bus.curve]\nenabled = true\n")
    cfg = load_config(path, env={})
    for name in ACTOR_NAMES:
        create_key(keys_dir(cfg), name, "actor")
    create_key(keys_dir(cfg), "alice", "operator")
    create_key(keys_dir(cfg), "momo", "strategy")
    create_key(keys_dir(cfg), "other", "strategy")
    return path


@pytest.fixture
def curve_system(curve_config: Path, processes: list[ActorProcess], zctx: zmq.Context):
    cfg = load_config(curve_config, env={})
    proxy = ActorProcess("bus.proxy", curve_config, name="proxy").start()
    processes.append(proxy)
    echo = ActorProcess(ECHO_ACTOR, curve_config, name="echo").start()
    processes.append(echo)
    op = Security.for_process(cfg, "alice")
    client = SyncClient(zctx, cfg.bus.monitor, service="monitor", stamper=Stamper("alice"), timeout_s=0.5,
                        retries=0, security=op, server_key=op.server_key("monitor"))
    eventually(lambda: _answers(client), 20, message=lambda: f"echo actor with CURVE; log:\n{echo.log()[-3000:]}")
    client.close()
    return cfg


def _answers(client: SyncClient) -> bool:
    try:
        return isinstance(client.call(m.Ping()), m.Pong)
    except RequestTimeout:
        return False


def _client(zctx: zmq.Context, cfg, key_name: str) -> SyncClient:
    sec = Security.for_process(cfg, key_name)
    return SyncClient(zctx, cfg.bus.monitor, service="monitor", stamper=Stamper(key_name),
                      timeout_s=REFUSED_TIMEOUT_S, retries=0, security=sec, server_key=sec.server_key("monitor"))


def _kill() -> m.Kill:
    return m.Kill(kill_id="k-1", reason="test")


def test_operator_key_kill_is_accepted_with_identity_from_key(curve_system, zctx: zmq.Context) -> None:
    reply = _client(zctx, curve_system, "alice").call(_kill())
    assert reply == m.Ack(detail="operator:alice")


def test_strategy_key_kill_is_refused(curve_system, zctx: zmq.Context) -> None:
    reply = _client(zctx, curve_system, "momo").call(_kill())
    assert isinstance(reply, m.Rejected) and reply.code == "unauthorized"
    assert "strategy:momo" in reply.reason


def test_strategy_spoofing_another_strategy_id_is_refused(curve_system, zctx: zmq.Context) -> None:
    order = m.OrderSpec(strategy_id="other", client_order_id="c1", instrument=m.Instrument(symbol="AAPL"),
                        side="BUY", quantity=1)
    reply = _client(zctx, curve_system, "momo").call(m.PlaceOrder(order=order))
    assert isinstance(reply, m.Rejected) and reply.code == "unauthorized"
    assert "cannot act for strategy 'other'" in reply.reason


def test_unknown_key_cannot_connect(curve_system, zctx: zmq.Context, tmp_path: Path) -> None:
    outsider = tmp_path / "outsider"
    outsider.mkdir()
    pub_path, sec_path = zmq.auth.create_certificates(str(outsider), "eve")
    public, secret = zmq.auth.load_certificate(sec_path)
    sec = Security(enabled=True, name="eve", public=public, secret=secret, directory=keys_dir(curve_system))
    client = SyncClient(zctx, curve_system.bus.monitor, service="monitor", timeout_s=REFUSED_TIMEOUT_S, retries=0,
                        security=sec, server_key=sec.server_key("monitor"))
    with pytest.raises(RequestTimeout):
        client.call(m.Ping())


def test_wrong_server_key_cannot_connect(curve_system, zctx: zmq.Context) -> None:
    sec = Security.for_process(curve_system, "alice")
    client = SyncClient(zctx, curve_system.bus.monitor, service="monitor", timeout_s=REFUSED_TIMEOUT_S, retries=0,
                        security=sec, server_key=sec.server_key("gateway"))  # not the monitor's key
    with pytest.raises(RequestTimeout):
        client.call(m.Ping())


def test_no_key_cannot_connect(curve_system, zctx: zmq.Context) -> None:
    client = SyncClient(zctx, curve_system.bus.monitor, service="monitor", timeout_s=REFUSED_TIMEOUT_S, retries=0)
    with pytest.raises(RequestTimeout):
        client.call(m.Ping())


def test_strategy_cannot_publish_fills_but_actor_can(curve_system, zctx: zmq.Context) -> None:
    cfg = curve_system
    watcher = Security.for_process(cfg, "portfolio")
    sub = SyncSubscriber(zctx, cfg.bus.proxy_backend, [topics.FILL_PREFIX], name="watcher", security=watcher,
                         server_key=watcher.server_key("proxy"))
    helper = Publisher(zctx, cfg.bus.proxy_frontend, Stamper("portfolio"), security=watcher,
                       server_key=watcher.server_key("proxy"))
    sub.wait_ready(helper)
    fill = m.FillEvent(exec_id="e.01", exec_key="e", order_ref="momo/c1", instrument=m.Instrument(symbol="AAPL"),
                       side="BUY", quantity=1, price=1.0)
    strat = Security.for_process(cfg, "momo")
    spoofer = Publisher(zctx, cfg.bus.proxy_frontend, Stamper("gateway"), security=strat,
                        server_key=strat.server_key("proxy"))
    spoofer.wait_ready_sync(cfg.bus.proxy_backend, security=strat, server_key=strat.server_key("proxy"))
    spoofer.publish(topics.fill("AAPL"), fill)
    actor = Security.for_process(cfg, "gateway")
    real = Publisher(zctx, cfg.bus.proxy_frontend, Stamper("gateway-real"), security=actor,
                     server_key=actor.server_key("proxy"))
    real.wait_ready_sync(cfg.bus.proxy_backend, security=actor, server_key=actor.server_key("proxy"))
    real.publish(topics.fill("AAPL"), fill)
    got = sub.recv(5.0)
    assert got is not None and got[1].sender == "gateway-real"
    assert sub.recv(0.3) is None  # the spoofed fill never arrives


def test_non_loopback_bind_without_curve_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[bus]\nallow_non_loopback = true\ngateway = "tcp://0.0.0.0:5560"\n')
    with pytest.raises(ConfigError, match="curve"):
        load_config(toml, env={})
    toml.write_text('[bus]\ngateway = "tcp://0.0.0.0:5560"\n')
    with pytest.raises(ConfigError, match="allow_non_loopback"):
        load_config(toml, env={})
