"""Configuration validation: every bad or contradictory setting stops the gateway with exit 78 and a message
naming what to set; a real gateway configuration never falls back to the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway.settings import check_accounts, resolve_settings
from bus.config import EXIT_CONFIG, ConfigError
from bus.messages import Rejected
from tests.support.builders import order
from tests.support.config import cfg_of, free_port, gateway_extra, write_config
from tests.support.gateway_harness import GatewayHarness
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually

LIVE = "U7654321"


def settings_for(tmp_path: Path, env: dict[str, str] | None = None, **gateway) -> object:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = cfg_of(write_config(tmp_path, extra=gateway_extra(gateway.pop("port", 0), **gateway)))
    return resolve_settings(cfg, env or {})


@pytest.mark.parametrize("gateway,env,needle", [
    ({"mode": "paper"}, {}, "gateway.account is required in paper mode"),
    ({"mode": "paper", "account": LIVE}, {}, "not a paper account"),
    ({"mode": "paper", "account": "DU1", "port": 4001}, {}, "4001 is a live"),
    ({"mode": "paper", "account": "DU1"}, {"KHAZAD_LIVE_CONFIRM": "DU1"}, "KHAZAD_LIVE_CONFIRM is set"),
    ({"mode": "live"}, {}, "gateway.account is required in live mode"),
    ({"mode": "live", "account": "DU1234567"}, {"KHAZAD_LIVE_CONFIRM": "DU1234567"}, "is a paper account"),
    ({"mode": "live", "account": LIVE}, {}, f"set KHAZAD_LIVE_CONFIRM={LIVE}"),
    ({"mode": "live", "account": LIVE}, {"KHAZAD_LIVE_CONFIRM": "U1111111"}, "not the live account"),
    ({"mode": "live", "account": LIVE, "port": 7497}, {"KHAZAD_LIVE_CONFIRM": LIVE}, "7497 is a paper"),
    ({"mode": "sim"}, {"KHAZAD_LIVE_CONFIRM": LIVE}, "gateway.mode is 'sim'"),
    ({"mode": "sim", "port": 7496}, {}, "7496 is a live"),
    ({"mode": "sim", "account": "DU999"}, {}, "not the simulator's account"),
    ({"mode": "sim", "account": "bad account!"}, {}, "does not look like an IB account"),
    ({"mode": "sim", "reconnect_initial_s": 5.0, "reconnect_max_s": 1.0}, {}, "reconnect_initial_s"),
])
def test_bad_settings_name_what_to_set(tmp_path, gateway, env, needle):
    with pytest.raises(ConfigError) as err:
        settings_for(tmp_path, env, **gateway)
    assert needle in str(err.value)


def test_good_settings_resolve_mode_ports(tmp_path):
    s = settings_for(tmp_path, mode="paper", account="DU1234567")
    assert (s.mode, s.port, s.account) == ("paper", 4002, "DU1234567")
    s = settings_for(tmp_path / "b", {"KHAZAD_LIVE_CONFIRM": LIVE}, mode="live", account=LIVE)
    assert (s.mode, s.port) == ("live", 4001)
    (tmp_path / "c").mkdir()
    cfg = cfg_of(write_config(tmp_path / "c", extra="[gateway]\nmode = \"sim\"\n"))
    assert resolve_settings(cfg, {}).port == cfg.sim.port


def test_server_accounts_must_agree_with_the_mode(tmp_path):
    paper = settings_for(tmp_path, mode="paper", account="DU1234567")
    assert check_accounts(paper, ["DU1234567"]) == "DU1234567"
    with pytest.raises(ConfigError, match="manages live account"):
        check_accounts(paper, ["U1234567"])
    with pytest.raises(ConfigError, match="not among the accounts"):
        check_accounts(paper, ["DU7777777"])
    live = settings_for(tmp_path / "b", {"KHAZAD_LIVE_CONFIRM": LIVE}, mode="live", account=LIVE)
    with pytest.raises(ConfigError, match="manages paper account"):
        check_accounts(live, [LIVE, "DU1"])
    sim = settings_for(tmp_path / "c", mode="sim")
    assert check_accounts(sim, ["DU1234567"]) == "DU1234567"
    with pytest.raises(ConfigError, match="several accounts"):
        check_accounts(sim, ["DU1", "DU2"])


def _exit_of(tmp_path: Path, extra: str, env: dict[str, str] | None = None, timeout: float = 20) -> tuple[int, str]:
    """Exit code and log of a gateway started with ``extra`` appended to a valid test config (the last section of
    the file is [gateway], so appended keys land there; they may be invalid on purpose)."""
    path = write_config(tmp_path, extra="[gateway]\n")
    path.write_text(path.read_text() + extra)
    proc = ActorProcess("actors.gateway", path, name="gateway", env=env).start()
    try:
        code = proc.wait(timeout)
    finally:
        proc.stop()
    return code, proc.log()


@pytest.mark.parametrize("extra,env,needle", [
    ('mode = "paper"\n', {}, "gateway.account is required"),
    ('mode = "live"\naccount = "U7654321"\n', {}, "KHAZAD_LIVE_CONFIRM"),
    ('client_library = "ib_fake"\n', {}, "gateway.client_library"),
    ("pacing_per_s = 0\n", {}, "gateway.pacing_per_s"),
    ("colour = 3\n", {}, "unknown key"),
])
def test_bad_config_exits_78_before_connecting(tmp_path, extra, env, needle):
    code, log = _exit_of(tmp_path, extra, env)
    assert code == EXIT_CONFIG, log
    assert needle in log


def test_missing_approval_key_exits_78(tmp_path):
    path = write_config(tmp_path, extra=gateway_extra(0))
    cfg_of(path).path(cfg_of(path).risk.approval_key_file).unlink()
    proc = ActorProcess("actors.gateway", path, name="gateway", env={"KHAZAD_APPROVAL_KEY": ""}).start()
    try:
        assert proc.wait(20) == EXIT_CONFIG
    finally:
        proc.stop()
    assert "approval_key_file" in proc.log()


@pytest.fixture
def sim():
    from sim.testing import running_sim

    with running_sim(seed=5) as handle:
        yield handle


def test_live_config_against_a_paper_server_exits_78_without_trading(tmp_path, sim, processes, zctx):
    path = write_config(tmp_path, extra=gateway_extra(sim.port, mode="live", account=LIVE))
    proxy = ActorProcess("bus.proxy", path, name="proxy").start()
    processes.append(proxy)
    gw = ActorProcess("actors.gateway", path, name="gateway", env={"KHAZAD_LIVE_CONFIRM": LIVE}).start()
    processes.append(gw)
    assert gw.wait(30) == EXIT_CONFIG, gw.log()
    assert "manages paper account(s) DU1234567" in gw.log()
    state = sim.state()
    assert not [r for r in state["request_log"] if r["name"] in ("placeOrder", "reqGlobalCancel")]
    eventually(lambda: not sim.state()["clients"], message="the gateway disconnected")


def test_paper_config_never_falls_back_to_the_simulator(tmp_path, sim, processes, zctx):
    dead_port = free_port()
    # [sim].port points at a live simulator: a fallback would find it
    path = write_config(tmp_path, extra=gateway_extra(dead_port, mode="paper", account="DU1234567"),
                        ports={"sim": sim.port})
    assert cfg_of(path).sim.port == sim.port
    proxy = ActorProcess("bus.proxy", path, name="proxy").start()
    processes.append(proxy)
    harness = GatewayHarness(zctx, path, processes, sim, None)
    try:
        harness.start()
        from tests.support.processes import wait_serving
        wait_serving(zctx, harness.cfg.bus.gateway, harness.proc)
        eventually(lambda: harness.log().count("failed") >= 3, 20, message="three failed connect attempts")
        status = harness.status()
        assert status.connection in ("DISCONNECTED", "CONNECTING") and status.mode == "paper"
        refused = harness.submit(order(coid="nofallback"))
        assert isinstance(refused, Rejected) and refused.code == "disconnected"
        assert f":{dead_port}" in harness.log() and f":{sim.port} " not in harness.log()
        state = sim.state()
        assert state["clients"] == [] and state["closed_clients"] == []
        assert harness.proc.alive()
    finally:
        harness.close()
