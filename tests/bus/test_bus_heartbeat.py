"""Heartbeats: a SIGSTOPped process is declared dead within interval x liveness, and alive again after SIGCONT."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable

import zmq

from bus import topics
from bus.config import KhazadConfig
from bus.heartbeat import LivenessTracker, PeerLiveness
from bus.messages import Heartbeat
from tests.support.clients import sync_subscriber
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually

#: Scheduling slack on top of interval x liveness (the sweep runs every poll; the machine is shared).
SLACK_S = 1.0
#: How long one watch step waits for a beat before sweeping.
POLL_S = 0.02


class Watcher:
    """A LivenessTracker fed by a real subscriber on ``hb.``, as the monitor does it."""

    def __init__(self, zctx: zmq.Context, cfg: KhazadConfig) -> None:
        self.sub = sync_subscriber(zctx, cfg, [topics.HEARTBEAT_PREFIX], name="test-liveness")
        self.tracker = LivenessTracker(liveness=cfg.bus.heartbeat_liveness)
        self.died: list[tuple[float, PeerLiveness]] = []
        self.revived: list[tuple[float, PeerLiveness]] = []

    def step(self) -> None:
        while (got := self.sub.recv(POLL_S)) is not None:
            _, env = got
            if isinstance(env.body, Heartbeat):
                hb = env.body
                back = self.tracker.beat(hb.actor, interval_s=hb.interval_s, state=hb.state, pid=hb.pid,
                                         incarnation=env.incarnation)
                if back is not None:
                    self.revived.append((time.monotonic(), back))
        self.died.extend((time.monotonic(), p) for p in self.tracker.sweep())

    def until(self, predicate: Callable[[], bool], timeout: float, message: str) -> None:
        def check() -> bool:
            self.step()
            return predicate()

        eventually(check, timeout, interval=0.001, message=message)

    def close(self) -> None:
        self.sub.close()


def test_sigstopped_process_declared_dead_within_bound_and_alive_after_sigcont(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe()
    bound = cfg.bus.heartbeat_interval_s * cfg.bus.heartbeat_liveness
    w = Watcher(zctx, cfg)
    try:
        w.until(lambda: w.tracker.is_alive("probe"), 10, "no heartbeat from the probe")
        probe.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        w.until(lambda: bool(w.died), bound + SLACK_S + 5, "a stopped process was never declared dead")
        died_at, peer = w.died[0]
        assert peer.name == "probe" and peer.pid == probe.pid and not w.tracker.is_alive("probe")
        assert died_at - stopped_at <= bound + SLACK_S
        assert died_at - peer.last_beat > bound  # dead only after `liveness` missed beats, not before
        probe.signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        w.until(lambda: w.tracker.is_alive("probe"), 10, "the resumed process never came back to life")
        revived_at, back = w.revived[-1]
        assert back.name == "probe" and back.deaths == 1 and revived_at >= resumed_at
        assert [p.name for _, p in w.died] == ["probe"]  # one death, reported once
    finally:
        probe.signal(signal.SIGCONT)
        w.close()
    assert probe.alive()


def test_heartbeat_topic_and_liveness_tracker_transitions() -> None:
    now = [100.0]
    t = LivenessTracker(liveness=3, clock=lambda: now[0])
    assert topics.heartbeat("gateway") == "hb.gateway"
    assert t.beat("gateway", interval_s=0.5) is not None  # first sight: alive
    assert t.beat("gateway", interval_s=0.5) is None
    now[0] += 1.5  # exactly 3 intervals: not yet dead
    assert t.sweep() == [] and t.is_alive("gateway")
    now[0] += 0.01
    assert [p.name for p in t.sweep()] == ["gateway"] and not t.is_alive("gateway")
    assert t.sweep() == []  # reported once
    assert t.beat("gateway", interval_s=0.5) is not None and t.is_alive("gateway")
    assert t.age("gateway") == 0 and t.age("nobody") is None


def test_liveness_tracker_ignores_a_nonsense_interval() -> None:
    now = [0.0]
    t = LivenessTracker(liveness=3, clock=lambda: now[0])
    t.beat("weird", interval_s=math.nan)
    t.beat("zero", interval_s=0.0)
    now[0] += 60
    assert {p.name for p in t.sweep()} == {"weird", "zero"}  # a NaN interval must not make a peer immortal
