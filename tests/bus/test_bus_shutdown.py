"""Shutdown: SIGTERM/SIGINT to a bus process exits 0 within 2 s, also with messages pending, a stuck on_stop, or
while the process is still waiting for the proxy."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from bus.codec import Stamper, request_codec
from bus.config import KhazadConfig
from bus.messages import Alert, WaitOrder
from bus.pubsub import Publisher
from tests.support.clients import publisher, security, server_key, sync_subscriber
from tests.support.keys import TEST_PUBLISHER
from tests.support.processes import ActorProcess, start_proxy
from tests.support.programs import PROBE_KEY
from tests.support.waiting import eventually

#: The requirement: a bus process exits cleanly within 2 s of SIGTERM/SIGINT.
SHUTDOWN_BOUND_S = 2.0
FLOOD_COUNT = 2000
FLOOD_PAYLOAD = "x" * 8192
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def _exit_within_bound(proc: ActorProcess, sig: int = signal.SIGTERM) -> tuple[int, float]:
    start = time.monotonic()
    proc.signal(sig)
    try:
        code = proc.wait(SHUTDOWN_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.name} still running {SHUTDOWN_BOUND_S}s after {signal.Signals(sig).name}:\n"
                    f"{proc.log()[-3000:]}")
    return code, time.monotonic() - start


def _flood(zctx: zmq.Context, cfg: KhazadConfig, topic: str, first: Alert | None = None) -> Publisher:
    pub = publisher(zctx, cfg, Stamper("test-flooder"), key=TEST_PUBLISHER, sndhwm=10)
    pub.wait_ready_sync(cfg.bus.proxy_backend)
    if first is not None:
        pub.publish(topic, first)
    for _ in range(FLOOD_COUNT):
        pub.publish(topic, Alert(kind="flood", message=FLOOD_PAYLOAD))
    return pub


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_proxy_exits_zero_within_bound_on_signal(proxy: ActorProcess, sig: int) -> None:
    code, _ = _exit_within_bound(proxy, sig)
    assert code == 0, proxy.log()


def test_proxy_with_pending_messages_exits_zero_within_bound(
        config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, cfg: KhazadConfig) -> None:
    proxy = start_proxy(config_path, processes, zctx)
    stalled = sync_subscriber(zctx, cfg, ["alert.flood"], name="never-reads", rcvhwm=1)
    helper = publisher(zctx, cfg, Stamper("probe-helper"))
    stalled.wait_ready(helper)
    pub = _flood(zctx, cfg, "alert.flood.x")  # queued in the proxy for a subscriber that never reads
    try:
        code, _ = _exit_within_bound(proxy)
    finally:
        pub.close()
        helper.close()
        stalled.close()
    assert code == 0, proxy.log()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_actor_exits_zero_within_bound_on_signal(start_probe: Callable[..., ActorProcess], sig: int) -> None:
    probe = start_probe()
    code, _ = _exit_within_bound(probe, sig)
    assert code == 0, probe.log()
    assert "probe: stopped (exit 0)" in probe.log()


def test_actor_with_pending_events_and_requests_exits_zero_within_bound(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe(env={"PROBE_INBOX_SIZE": "20"})
    # a request whose handler is still working, sent by a caller that will never read the answer
    caller = zctx.socket(zmq.DEALER)
    caller.setsockopt(zmq.LINGER, 0)
    sec = security(cfg)
    if sec is not None:
        sec.make_client(caller, server_key(sec, PROBE_KEY))
    caller.connect(cfg.bus.monitor)
    caller.send(request_codec().encode(Stamper("caller").stamp(
        WaitOrder(strategy_id="s1", client_order_id="long", timeout_s=60.0), request_id="long-1")))
    # a stalled consumer with a full inbox and full socket queues behind it
    pub = _flood(zctx, cfg, "alert.test.flood", first=Alert(kind="test", message="stall"))
    try:
        code, _ = _exit_within_bound(probe)
    finally:
        pub.close()
        caller.close(0)
    assert code == 0, probe.log()


def test_actor_with_stuck_on_stop_still_exits_within_bound(start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe(env={"PROBE_STALL_ON_STOP": "1"})
    code, _ = _exit_within_bound(probe)
    assert code == 0, probe.log()
    assert "on_stop did not finish cleanly" in probe.log()


def test_actor_signalled_while_waiting_for_the_proxy_exits_zero_within_bound(
        probe_factory: Callable[..., ActorProcess]) -> None:
    probe = probe_factory(wait=False)  # no proxy: the actor is stuck in its ready handshake
    eventually(lambda: "CREATED -> STARTING" in probe.log() or not probe.alive(), message=lambda: probe.log())
    code, _ = _exit_within_bound(probe)
    assert code == 0, probe.log()
    assert "stop requested while starting" in probe.log()
