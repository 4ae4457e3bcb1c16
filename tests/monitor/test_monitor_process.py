"""The monitor as a real process with real actors on a real proxy: status, death detection, alert hook, audit,
Prometheus over HTTP; and the supervisord FATAL listener speaking its real protocol."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from actors.monitor.audit import read_audit
from bus import registry, topics
from bus.messages import Alert, GetSystemStatus, SystemStatusReply
from bus.sync_client import SyncClient
from tests.support.clients import sync_client, sync_subscriber
from tests.support.config import REPO, cfg_of, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually


def config_with_hook(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    out = tmp_path / "hooked.jsonl"
    path.write_text(path.read_text().replace(
        "[monitor]\n", f"[monitor]\nalert_command = \"cat >> '{out}'; echo >> '{out}'\"\n"
        'expected_actors = ["proxy", "portfolio", "monitor"]\n'))
    return path


def status(client: SyncClient) -> SystemStatusReply:
    reply = client.call(GetSystemStatus())
    assert isinstance(reply, SystemStatusReply), reply
    return reply


def test_monitor_reports_health_and_catches_a_killed_actor(tmp_path, zctx, processes):
    path = config_with_hook(tmp_path)
    cfg = cfg_of(path)
    for spec in (registry.PROXY, registry.MONITOR, registry.PORTFOLIO):
        processes.append(ActorProcess(spec.module, path, name=spec.name).start())
    proxy, monitor, portfolio = processes
    wait_serving(zctx, cfg.bus.monitor, monitor)
    client = sync_client(zctx, cfg, "monitor", timeout_s=2.0)
    sub = sync_subscriber(zctx, cfg, [topics.alert("actor_dead")], name="test-dead")
    try:
        def all_alive():
            s = status(client)
            return all(a.alive for a in s.actors) and {a.name for a in s.actors} >= {"proxy", "portfolio",
                                                                                     "monitor"} and s
        s = eventually(all_alive, 20, message="every actor alive")
        health = {a.name: a for a in s.actors}
        assert health["portfolio"].pid == portfolio.pid
        assert float(eventually(lambda: status(client).actors[1].detail.get("rss_mb"))) > 10

        metrics_url = f"http://{cfg.monitor.metrics_host}:{cfg.monitor.metrics_port}/metrics"
        scrape = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert 'khazad_actor_up{actor="portfolio"} 1.0' in scrape

        portfolio.signal(signal.SIGKILL)
        portfolio.wait(5)

        def dead_alert():
            got = sub.recv(0.2)
            return got is not None and got[1].body
        alert = eventually(dead_alert, message="actor_dead alert on the bus")
        assert isinstance(alert, Alert) and alert.detail["actor"] == "portfolio" and alert.severity == "critical"
        assert not {a.name: a for a in status(client).actors}["portfolio"].alive
        scrape = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert 'khazad_actor_up{actor="portfolio"} 0.0' in scrape
        assert any(r.kind == "actor_dead" and r.source == "portfolio" for r in read_audit(cfg.path(cfg.monitor.audit_db)))
        hooked = tmp_path / "hooked.jsonl"
        line = eventually(lambda: hooked.exists() and hooked.read_text().strip(), message="alert hook ran")
        assert json.loads(line.splitlines()[0])["kind"] == "actor_dead"
        assert monitor.alive()
    finally:
        sub.close()
        client.close()


def test_fatal_listener_reports_a_fatal_program_and_keeps_the_protocol(tmp_path, zctx, proxy, config_path):
    cfg = cfg_of(config_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "risk.log").write_text("starting\nrisk: configuration error: risk.limits.max_position: Expected `float`\n")
    sub = sync_subscriber(zctx, cfg, [topics.alert("process_fatal")], name="test-fatal")
    listener = subprocess.Popen([sys.executable, "-m", "actors.monitor.fatal_listener", "--config", str(config_path),
                                 "--log-dir", str(logs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        assert listener.stdout.readline() == b"READY\n"
        payload = b"processname:risk groupname:risk from_state:BACKOFF"
        header = (f"ver:3.0 server:supervisor serial:7 pool:fatal_listener poolserial:1 "
                  f"eventname:PROCESS_STATE_FATAL len:{len(payload)}\n").encode()
        listener.stdin.write(header + payload)
        listener.stdin.flush()
        assert listener.stdout.read(len(b"RESULT 2\nOK")) == b"RESULT 2\nOK"
        assert listener.stdout.readline() == b"READY\n"  # ready for the next event

        def fatal_alert():
            got = sub.recv(0.2)
            return got is not None and got[1].body
        alert = eventually(fatal_alert, message="process_fatal alert on the bus")
        assert alert.severity == "critical" and alert.detail["program"] == "risk"
        assert "configuration error" in alert.detail["log_tail"]
        (row,) = read_audit(cfg.path(cfg.monitor.audit_db))
        assert row.kind == "alert" and row.scope == "risk" and "FATAL" in row.summary
    finally:
        sub.close()
        listener.stdin.close()
        assert listener.wait(5) == 0
