"""Alert routes against local HTTP and SMTP servers: each route's payload format, threshold, retries with backoff,
rate limit and bounded queue; a slow or failing endpoint never delays another route or the monitor's heartbeat;
bad routes are refused at start naming the key; secrets never reach the log."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from actors.monitor.alert_routes import AlertRouter
from bus import registry, topics
from bus.codec import Stamper
from bus.config import EXIT_CONFIG, ConfigError, MonitorConfig, load_config
from bus.messages import Alert, GetSystemStatus, SystemStatusReply
from bus.sync_client import SyncClient
from tests.support.clients import publisher, sync_client, sync_subscriber
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.sinks import HttpSink, SmtpSink
from tests.support.waiting import eventually

SECRET = "s3cr3t-pa55"


@pytest.fixture
def http() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    sink_id = logger.add(buf, level="DEBUG", format="{message}")
    yield buf
    logger.remove(sink_id)


def monitor_cfg(tmp_path: Path, routes: str, extra: str = "") -> MonitorConfig:
    path = tmp_path / "k.toml"
    path.write_text(f"{extra}\n{routes}")
    return load_config(path, env={}).monitor


def alert(kind: str = "actor_dead", severity: str = "critical", message: str = "orders is not responding") -> Alert:
    return Alert(kind=kind, severity=severity, message=message, source="monitor", detail={"actor": "orders"},
                 wall_ns=time.time_ns())


def test_slack_teams_webhook_and_email_routes_deliver_their_own_formats(tmp_path, http, smtp, log_text,
                                                                       monkeypatch):
    monkeypatch.setenv("KHAZAD_TEST_SMTP_PASSWORD", SECRET)
    (tmp_path / "teams.url").write_text(http.url("/teams-legacy") + "\n")
    mon = monitor_cfg(tmp_path, f"""
[monitor]
alert_webhook = "{http.url('/legacy')}"
[[monitor.alert_routes]]
kind = "slack"
url = "{http.url('/slack')}"
[[monitor.alert_routes]]
kind = "teams"
url = "{http.url('/teams')}"
[[monitor.alert_routes]]
kind = "teams"
card = "messagecard"
url_file = "{tmp_path / 'teams.url'}"
min_severity = "critical"
[[monitor.alert_routes]]
kind = "webhook"
name = "generic"
url = "{http.url('/hook')}"
min_severity = "info"
[[monitor.alert_routes]]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
starttls = false
username = "ops"
password_env = "KHAZAD_TEST_SMTP_PASSWORD"
sender = "khazad@example.org"
recipients = ["ops@example.org", "desk@example.org"]
""")
    router = AlertRouter(mon, tmp_path)
    try:
        assert router.offer(alert("trading_halted", "warning", "risk: trading HALTED for all")) == [
            "slack-0", "teams-1", "generic", "email-4"]
        assert router.offer(alert("actor_back", "info", "orders is back")) == ["generic"]
        assert len(router.offer(alert())) == 6
        assert router.drain(20)
    finally:
        router.close()
    slack = http.rec.posts("/slack")
    assert [p["blocks"][0]["text"]["text"] for p in slack] == ["[WARNING] trading_halted", "[CRITICAL] actor_dead"]
    assert "orders is not responding" in slack[1]["text"]
    assert slack[1]["blocks"][1] == {"type": "section", "text": {"type": "mrkdwn", "text": "orders is not responding"}}
    teams = http.rec.posts("/teams")
    card = teams[1]["attachments"][0]
    assert teams[1]["type"] == "message" and card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert {"title": "actor", "value": "orders"} in card["content"]["body"][2]["facts"]
    (legacy_card,) = http.rec.posts("/teams-legacy")  # critical only
    assert legacy_card["@type"] == "MessageCard" and legacy_card["themeColor"] == "E01E5A"
    assert legacy_card["summary"].startswith("[CRITICAL] actor_dead")
    generic = http.rec.posts("/hook")
    assert [(p["kind"], p["severity"]) for p in generic] == [("trading_halted", "warning"), ("actor_back", "info"),
                                                               ("actor_dead", "critical")]
    (legacy,) = http.rec.posts("/legacy")  # monitor.alert_webhook: critical only, the alert's JSON
    assert legacy["kind"] == "actor_dead" and legacy["detail"] == {"actor": "orders"}
    mails = smtp.received()
    assert len(mails) == 2
    last = mails[1]
    assert last["auth"] == ("ops", SECRET)
    assert last["to"] == ["ops@example.org", "desk@example.org"]
    assert last["message"]["Subject"] == "[khazad] [CRITICAL] actor_dead: orders is not responding"
    assert "orders is not responding" in last["message"].get_payload()
    logs = log_text.getvalue()
    assert SECRET not in logs and "/teams-legacy" not in logs and "/slack" not in logs  # hosts only
    assert "delivered" in logs


def test_a_failing_endpoint_is_retried_with_backoff_then_counted(tmp_path, http):
    mon = monitor_cfg(tmp_path, f"""
[[monitor.alert_routes]]
kind = "webhook"
name = "flaky"
url = "{http.url('/flaky')}"
retries = 3
backoff_s = 0.2
[[monitor.alert_routes]]
kind = "webhook"
name = "down"
url = "{http.url('/fail')}"
retries = 1
backoff_s = 0.1
""")
    outcomes: list[tuple[str, str]] = []
    router = AlertRouter(mon, tmp_path, on_outcome=lambda route, what, a: outcomes.append((route, what)))
    try:
        router.offer(alert())
        assert router.drain(20)
    finally:
        router.close()
    stamps = [t for p, _, t in http.rec.requests if p == "/flaky"]
    assert len(stamps) == 3  # 500, 500, 200
    assert stamps[1] - stamps[0] >= 0.2 * 0.9 and stamps[2] - stamps[1] >= 0.4 * 0.9  # backoff doubles
    assert http.rec.hits["/fail"] == 2  # one try, one retry
    assert sorted(outcomes) == [("down", "failed"), ("flaky", "delivered")]
    flaky = next(w for w in router.workers if w.name == "flaky")
    assert (flaky.stats.retried, flaky.stats.delivered, flaky.stats.failed) == (2, 1, 0)


def test_rate_limit_and_a_full_queue_drop_and_count_without_blocking(tmp_path, http):
    mon = monitor_cfg(tmp_path, f"""
[[monitor.alert_routes]]
kind = "slack"
name = "limited"
url = "{http.url('/slack')}"
rate_limit_per_min = 2
[[monitor.alert_routes]]
kind = "webhook"
name = "stuck"
url = "{http.url('/slow')}"
queue_size = 2
retries = 0
timeout_s = 60
""")
    router = AlertRouter(mon, tmp_path)
    limited, stuck = router.workers
    try:
        router.offer(alert(message="alert 0"))
        eventually(lambda: http.rec.hits.get("/slow") == 1, message="first slow delivery in flight")
        started = time.monotonic()
        for i in range(1, 6):
            router.offer(alert(message=f"alert {i}"))
        assert time.monotonic() - started < 0.5  # offering never waits for a destination
        eventually(lambda: limited.stats.dropped_rate == 4, message="rate-limited alerts counted")
        assert len(http.rec.posts("/slack")) == 2
        # the stuck route holds one in delivery and two queued: the other three are dropped and counted
        assert (stuck.stats.queued, stuck.stats.dropped_overflow) == (3, 3)
    finally:
        http.rec.release.set()
        assert router.drain(20)
        router.close()
    assert len(http.rec.posts("/slow")) == 3


def test_bad_routes_are_refused_naming_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"monitor.alert_routes.0.smtp_host"):
        monitor_cfg(tmp_path, '[[monitor.alert_routes]]\nkind = "email"\nsender = "a@b"\nrecipients = ["c@d"]\n')
    with pytest.raises(ConfigError, match=r"monitor.alert_routes.1.url: set exactly one"):
        monitor_cfg(tmp_path, '[[monitor.alert_routes]]\nkind = "slack"\nurl = "https://x"\n'
                              '[[monitor.alert_routes]]\nkind = "teams"\n')
    with pytest.raises(ConfigError, match=r"monitor.alert_routes.0.min_severity"):
        monitor_cfg(tmp_path, '[[monitor.alert_routes]]\nkind = "slack"\nurl = "https://x"\nmin_severity = "loud"\n')
    monkeypatch.delenv("KHAZAD_NO_SUCH_URL", raising=False)
    mon = monitor_cfg(tmp_path, '[[monitor.alert_routes]]\nkind = "slack"\nurl_env = "KHAZAD_NO_SUCH_URL"\n')
    with pytest.raises(ConfigError, match=r"monitor.alert_routes.0.url_env: environment variable KHAZAD_NO_SUCH_URL"):
        AlertRouter(mon, tmp_path)


def _status(client: SyncClient) -> SystemStatusReply:
    reply = client.call(GetSystemStatus())
    assert isinstance(reply, SystemStatusReply)
    return reply


def test_monitor_process_delivers_on_every_route_while_one_endpoint_hangs(tmp_path, zctx, processes, http, smtp):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[monitor]\n", f"""[monitor]
expected_actors = ["proxy", "portfolio", "monitor"]
alert_command = "cat >> '{tmp_path / 'hooked.jsonl'}'; echo >> '{tmp_path / 'hooked.jsonl'}'"
""", 1) + f"""
[[monitor.alert_routes]]
kind = "webhook"
name = "hangs"
url = "{http.url('/slow')}"
min_severity = "info"
timeout_s = 60
retries = 0

[[monitor.alert_routes]]
kind = "slack"
url = "{http.url('/slack')}"

[[monitor.alert_routes]]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
starttls = false
sender = "khazad@example.org"
recipients = ["ops@example.org"]
min_severity = "critical"
""")
    cfg = cfg_of(path)
    for spec in (registry.PROXY, registry.MONITOR, registry.PORTFOLIO):
        processes.append(ActorProcess(spec.module, path, name=spec.name).start())
    proxy, monitor, portfolio = processes
    wait_serving(zctx, cfg.bus.monitor, monitor)
    client = sync_client(zctx, cfg, "monitor", timeout_s=2.0)
    sub = sync_subscriber(zctx, cfg, [topics.heartbeat("monitor")], name="test-monitor-hb")
    try:
        eventually(lambda: all(a.alive for a in _status(client).actors), 20, message="every actor alive")
        # another actor's alert (info) reaches the "hangs" route, which is stuck on it from now on
        pub = publisher(zctx, cfg, Stamper("risk"), key="risk")  # an alert is an actor's to raise
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        pub.publish(topics.alert("breaker"), Alert(kind="breaker", severity="info", message="a note", source="risk"))
        eventually(lambda: http.rec.hits.get("/slow"), message="the hanging endpoint got its first alert")
        pub.close()
        portfolio.kill()
        eventually(lambda: len(http.rec.posts("/slack")) >= 1, message="slack got actor_dead")
        mails = eventually(smtp.received, message="email got actor_dead")
        assert mails[0]["message"]["Subject"].startswith("[khazad] [CRITICAL] actor_dead")
        assert eventually(lambda: (tmp_path / "hooked.jsonl").exists() and "actor_dead" in
                          (tmp_path / "hooked.jsonl").read_text(), message="alert_command ran")
        assert http.rec.hits.get("/slow") == 1  # still hanging on its first delivery
        # the monitor's loop never waited: it keeps beating and answering
        beats = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and beats < 3:
            beats += sub.recv(0.5) is not None
        assert beats >= 3
        monitor_health = {a.name: a for a in _status(client).actors}["monitor"]
        assert monitor_health.alive and monitor_health.last_beat_age_s < 2.0
        scrape = __import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{cfg.monitor.metrics_port}/metrics", timeout=5).read().decode()
        assert 'khazad_alert_deliveries_total{outcome="delivered",route="slack-1"}' in scrape
    finally:
        http.rec.release.set()
        sub.close()
        client.close()


def test_monitor_refuses_to_start_with_an_unusable_route(tmp_path, processes):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '\n[[monitor.alert_routes]]\nkind = "slack"\nurl_env = "KHAZAD_UNSET_WEBHOOK"\n')
    proc = ActorProcess("actors.monitor", path, name="monitor", env={"KHAZAD_UNSET_WEBHOOK": ""}).start()
    processes.append(proc)
    assert proc.wait(20) == EXIT_CONFIG
    assert "monitor.alert_routes.0.url_env" in proc.log()
