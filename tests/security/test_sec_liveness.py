"""Issue 14, item 6: liveness that tells a clean exit from a death; and (minor) escapes never land raw in logs.

Seen on main: a strategy that exits cleanly is reported DEAD forever, with a critical ``actor_dead`` alert, and
``khazad status`` exits 1 until the system restarts; an alert full of ANSI escapes lands raw in the logs.

Real processes: proxy, portfolio (an expected actor), monitor; strategies through the SDK and the example
strategy as a process; ``khazad status`` as a process.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from bus import registry, topics
from bus.codec import Stamper
from bus.messages import ActorHealth, Alert, GetSystemStatus, SystemStatusReply
from sdk import KhazadClient
from tests.security.chain import READY_TIMEOUT_S, Chain, running_chain
from tests.support.clients import publisher
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually

STRATEGY_EXTRA = """
[strategy]
strategy_id = "example"
symbol = "AAPL"
quantity = 1
interval_s = 0.5
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with running_chain(tmp_path_factory.mktemp("sec-live"), ("portfolio", "monitor"), extra=STRATEGY_EXTRA) as c:
        yield c


def _system(chain: Chain) -> SystemStatusReply:
    reply = chain.call("monitor", GetSystemStatus())
    assert isinstance(reply, SystemStatusReply), reply
    return reply


def _actor(chain: Chain, name: str) -> ActorHealth | None:
    return next((a for a in _system(chain).actors if a.name == name), None)


def _silent_for_a_liveness_window(chain: Chain, name: str) -> bool:
    """True once ``name`` has been silent longer than the monitor's dead-peer bound (its sweep has run since)."""
    bus = chain.cfg.bus
    a = _actor(chain, name)
    return a is not None and (a.last_beat_age_s or 0) > bus.heartbeat_interval_s * bus.heartbeat_liveness + 0.5


def _alerts(chain: Chain, kind: str, actor: str) -> list[Alert]:
    return [a for a in _system(chain).alerts if a.kind == kind and a.detail.get("actor") == actor]


def _status_cli(chain: Chain) -> tuple[int, dict[str, Any]]:
    out = chain.khazad("status", "--json")
    return out.returncode, json.loads(out.stdout)


def test_strategy_that_closes_cleanly_is_shown_left_without_an_alert_and_status_stays_healthy(chain: Chain) -> None:
    name = "strategy.leaver"
    with KhazadClient("leaver", config=chain.cfg):
        eventually(lambda: (a := _actor(chain, name)) is not None and a.alive, message="the strategy is seen")
    eventually(lambda: (a := _actor(chain, name)) is not None and a.state.lower() == "left",
               message=lambda: f"the strategy shown as left: {_actor(chain, name)}")
    eventually(lambda: _silent_for_a_liveness_window(chain, name), message="a liveness window passed")
    health = _actor(chain, name)
    assert health is not None and health.state.lower() == "left" and not health.alive, health
    assert _alerts(chain, "actor_dead", name) == []
    code, st = _status_cli(chain)
    assert code == 0, st


def test_expected_actor_stopped_cleanly_is_left_not_dead_and_status_is_degraded_until_it_is_back(
        chain: Chain) -> None:
    portfolio = chain.procs["portfolio"]
    assert portfolio.stop() == 0  # SIGTERM, as supervisord stops it
    eventually(lambda: (a := _actor(chain, "portfolio")) is not None and a.state.lower() == "left",
               message=lambda: f"portfolio shown as left: {_actor(chain, 'portfolio')}")
    eventually(lambda: _silent_for_a_liveness_window(chain, "portfolio"), message="a liveness window passed")
    assert _alerts(chain, "actor_dead", "portfolio") == []
    code, st = _status_cli(chain)
    assert code == 1, st  # an expected actor that is not running: degraded, whatever the way it went
    restarted = ActorProcess(registry.PORTFOLIO.module, chain.path, name="portfolio").start()
    chain.procs["portfolio"] = restarted
    wait_serving(chain.ctx, chain.cfg.bus.portfolio, restarted, READY_TIMEOUT_S)
    eventually(lambda: (a := _actor(chain, "portfolio")) is not None and a.alive, message="portfolio back")
    code, st = _status_cli(chain)
    assert code == 0, st


def test_escape_sequences_in_an_alert_never_land_raw_in_the_monitors_log(chain: Chain) -> None:
    evil = "\x1b[2J\x1b[31mowned\x1b[0m\n2099-01-01 00:00:00 | CRITICAL | forged line"
    # a strategy's key: it may publish alert.strategy (bus.topics.PUBLISHERS), so the text is the monitor's to clean
    pub = publisher(chain.ctx, chain.cfg, Stamper("evil"), key="momo")
    try:
        pub.wait_ready_sync(chain.cfg.bus.proxy_backend)
        pub.publish(topics.alert("strategy"), Alert(kind="evil", severity="warning", message=evil, source="evil"))
        eventually(lambda: any(a.kind == "evil" for a in _system(chain).alerts) or "owned" in
                   chain.procs["monitor"].log(), message="the monitor saw the alert")
    finally:
        pub.close()
    log = chain.procs["monitor"].log()
    assert "\x1b" not in log
    assert "\n2099-01-01 00:00:00 | CRITICAL | forged line" not in log


def test_strategy_that_dies_raises_actor_dead_and_one_stopped_by_sigterm_leaves(chain: Chain) -> None:
    """(Last in the module: the strategy it kills stays DEAD, and a dead strategy makes ``khazad status`` exit 1.)"""
    died = ActorProcess("examples.simple_strategy", chain.path, name="example-killed",
                        env={"KHAZAD__STRATEGY__STRATEGY_ID": "killed"}).start()
    try:
        eventually(lambda: (a := _actor(chain, "strategy.killed")) is not None and a.alive, READY_TIMEOUT_S,
                   message=lambda: f"the example is seen; log:\n{died.log()[-2000:]}")
        died.kill()  # SIGKILL: no goodbye, the heartbeats just stop
        eventually(lambda: _alerts(chain, "actor_dead", "strategy.killed"), message="actor_dead for a death")
        assert _actor(chain, "strategy.killed").state == "DEAD"
    finally:
        died.kill()
    left = ActorProcess("examples.simple_strategy", chain.path, name="example-left",
                        env={"KHAZAD__STRATEGY__STRATEGY_ID": "termed"}).start()
    try:
        eventually(lambda: (a := _actor(chain, "strategy.termed")) is not None and a.alive, READY_TIMEOUT_S,
                   message=lambda: f"the example is seen; log:\n{left.log()[-2000:]}")
        # its SIGTERM handler is in place once the client has connected (the SDK logs it just before)
        eventually(lambda: "strategy.termed connected" in left.log(), READY_TIMEOUT_S,
                   message=lambda: f"the example connected; log:\n{left.log()[-2000:]}")
        left.signal(signal.SIGTERM)
        assert left.wait(30) == 0, left.log()[-3000:]
    finally:
        left.kill()
    eventually(lambda: _silent_for_a_liveness_window(chain, "strategy.termed"), message="a liveness window passed")
    assert _actor(chain, "strategy.termed").state.lower() == "left"
    assert _alerts(chain, "actor_dead", "strategy.termed") == []
