"""The gateway under supervisord against the simulator: it runs and serves; a killed gateway is restarted and
still HALTED; a bad configuration ends FATAL (exit 78) instead of a restart loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from supervisor.xmlrpc import SupervisorTransport

from bus import registry
from bus.messages import Rejected, SubmitAck
from tests.support.builders import order
from tests.support.config import REPO, cfg_of, gateway_extra, write_config
from tests.support.gateway_harness import GatewayHarness
from tests.support.waiting import eventually

SUPERVISOR_START_TIMEOUT_S = 30.0


def _program(name: str, module: str, config: Path, log_dir: Path, env: str = "") -> str:
    # as in the project's supervisord.conf, plus exit code 78 among the expected ones: a configuration error found
    # after startsecs (a live/paper mismatch is only known once connected) must not restart either
    return f"""
[program:{name}]
command = {sys.executable} -m {module} --config {config}
directory = {REPO}
environment = PYTHONUNBUFFERED="1"{env}
autostart = true
autorestart = unexpected
exitcodes = 0,78
startsecs = 1
startretries = 2
stopsignal = TERM
stopwaitsecs = 10
stopasgroup = true
killasgroup = true
redirect_stderr = true
stdout_logfile = {log_dir}/{name}.log
"""


class Supervisor:
    def __init__(self, tmp: Path, config: Path, gateway_env: str = "") -> None:
        self.tmp = tmp
        self.sock = tmp / "supervisor.sock"
        conf = tmp / "supervisord.conf"
        conf.write_text(f"""
[unix_http_server]
file = {self.sock}

[supervisord]
nodaemon = true
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
""" + _program("proxy", registry.PROXY.module, config, tmp)
                         + _program("gateway", registry.GATEWAY.module, config, tmp, gateway_env))
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.rpc = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, serverurl=f"unix://{self.sock}"))
        eventually(lambda: self.sock.exists() and self._alive(), SUPERVISOR_START_TIMEOUT_S,
                   message="supervisord answers")

    def _alive(self) -> bool:
        try:
            return self.rpc.supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def info(self, name: str) -> dict:
        return self.rpc.supervisor.getProcessInfo(name)

    def log(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def sim() -> Iterator:
    from sim.testing import running_sim

    with running_sim(seed=11) as handle:
        yield handle


def test_gateway_under_supervisord_serves_and_survives_sigkill_halted(tmp_path, sim, zctx: zmq.Context):
    config = write_config(tmp_path, extra=gateway_extra(sim.port))
    sup = Supervisor(tmp_path, config)
    harness = GatewayHarness(zctx, config, [], sim, None)
    try:
        eventually(lambda: sup.info("gateway")["statename"] == "RUNNING", 30, message=lambda: sup.log("gateway"))
        eventually(lambda: harness.status().connection == "READY", 30, message=lambda: sup.log("gateway"))
        ack = harness.submit(order(coid="sup1", order_type="LMT", limit=100.0))
        assert isinstance(ack, SubmitAck)
        report = harness.kill(kill_id="sup-kill")
        assert report.confirmed and report.cancelled == 1
        pid = sup.info("gateway")["pid"]
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: (i := sup.info("gateway"))["statename"] == "RUNNING" and i["pid"] != pid, 30,
                   message=lambda: sup.log("gateway"))
        status = eventually(lambda: (s := harness.status()).connection == "READY" and s, 30)
        assert status.trading_state == "HALTED" and status.epoch == report.epoch
        refused = harness.submit(order(coid="sup2"))
        assert isinstance(refused, Rejected) and refused.code == "halted"
    finally:
        harness.close()
        sup.close()


def test_bad_config_under_supervisord_is_not_restarted(tmp_path):
    config = write_config(tmp_path, extra=gateway_extra(0, mode="live", account="U1234567"))
    assert cfg_of(config).gateway.mode == "live"
    sup = Supervisor(tmp_path, config)
    try:
        info = eventually(lambda: (i := sup.info("gateway"))["statename"] in ("FATAL", "EXITED") and i, 60,
                          message=lambda: f"{sup.info('gateway')}\n{sup.log('gateway')}")
        log = sup.log("gateway")
        assert "KHAZAD_LIVE_CONFIRM" in log
        if info["statename"] == "EXITED":  # it outlived startsecs: exit 78 is final, never restarted
            assert info["exitstatus"] == 78 and log.count("configuration error") == 1
        else:  # failed before startsecs: the first start + startretries, then FATAL
            assert log.count("configuration error") == 3
    finally:
        sup.close()


def test_account_mismatch_after_connect_under_supervisord_is_not_restarted(tmp_path, sim):
    config = write_config(tmp_path, extra=gateway_extra(sim.port, mode="live", account="U1234567"))
    sup = Supervisor(tmp_path, config, gateway_env=',KHAZAD_LIVE_CONFIRM="U1234567"')
    try:
        info = eventually(lambda: (i := sup.info("gateway"))["statename"] in ("FATAL", "EXITED") and i, 60,
                          message=lambda: f"{sup.info('gateway')}\n{sup.log('gateway')}")
        log = sup.log("gateway")
        assert "manages paper account(s) DU1234567" in log
        assert log.count("configuration error") <= 3 and not [r for r in sim.state()["request_log"]
                                                             if r["name"] == "placeOrder"]
        assert info["statename"] == "FATAL" or info["exitstatus"] == 78
    finally:
        sup.close()
