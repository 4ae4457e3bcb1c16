"""Pub/sub through the real proxy process: no slow-joiner loss, gaps detected and reported (never silent),
restarts told apart from losses, and a stalled subscriber that survives its stall."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import zmq
from loguru import logger

from bus import sockets, topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import MAX_TEXT_LENGTH, Alert, Envelope, Heartbeat
from bus.pubsub import SequenceTracker, SyncSubscriber
from tests.support.clients import publisher, sync_subscriber
from tests.support.keys import TEST_PUBLISHER
from tests.support.processes import ActorProcess, start_proxy
from tests.support.programs import BURST_PUBLISHER, STALLED_SUBSCRIBER
from tests.support.waiting import eventually

#: Events published at once by a brand-new publisher (enough that a slow-joiner loss would show).
BURST = 3000
#: Small high-water marks on the proxy so a stalled subscriber overflows quickly.
TINY_HWM_ENV = {"KHAZAD__BUS__SEND_HWM": "10", "KHAZAD__BUS__RECV_HWM": "10"}
#: Flood that cannot fit in the HWMs plus the kernel's socket buffers: 8000 x 2 KB (the largest alert message).
FLOOD_COUNT = 8000
FLOOD_PAYLOAD = "x" * MAX_TEXT_LENGTH
#: A stall past the ZMTP heartbeat interval + timeout (with heartbeats on pub/sub, the connection was dropped while
#: stalled and libzmq aborted on reconnect; verified to fail against the old socket policy).
LONG_STALL_S = (sockets.ZMQ_HEARTBEAT_IVL_MS + sockets.ZMQ_HEARTBEAT_TIMEOUT_MS) / 1000 + 1.5


def _drain(sub: SyncSubscriber, into: list[tuple[str, Envelope[Any]]]) -> int:
    while (got := sub.recv(0.05)) is not None:
        into.append(got)
    return len(into)


def _ready_subscriber(zctx: zmq.Context, cfg: KhazadConfig, topics: list[str], **kw: Any) -> SyncSubscriber:
    sub = sync_subscriber(zctx, cfg, topics, name="test-sub", **kw)
    helper = publisher(zctx, cfg, Stamper("test-sub-probe"))
    try:
        sub.wait_ready(helper)  # the proxy now knows this subscription
    finally:
        helper.close()
    return sub


def test_new_publisher_process_burst_right_after_ready_arrives_complete_in_order(
        proxy: ActorProcess, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    sub = _ready_subscriber(zctx, cfg, ["alert.burst"])
    got: list[tuple[str, Envelope[Any]]] = []
    for run in range(2):  # the second run is a restart: a new incarnation, seq from 1 again, not a gap
        pub = ActorProcess(BURST_PUBLISHER, config_path, name=f"burst{run}",
                           args=["--count", str(BURST), "--topic", "alert.burst.x"]).start()
        processes.append(pub)
        eventually(lambda: _drain(sub, got) >= BURST * (run + 1), timeout=30,
                   message=lambda: f"{len(got)} of {BURST * (run + 1)} events; publisher log:\n{pub.log()}")
        assert pub.stop() == 0
    first, second = got[:BURST], got[BURST:]
    for part in (first, second):
        assert [int(env.body.message) for _, env in part] == list(range(BURST))
        assert [env.seq for _, env in part] == list(range(1, BURST + 1))
        assert len({env.incarnation for _, env in part}) == 1
    assert first[0][1].incarnation != second[0][1].incarnation
    assert (sub.tracker.gaps, sub.tracker.missed, sub.invalid) == (0, 0, 0)


def test_stalled_subscriber_with_tiny_hwm_detects_logs_and_reports_the_gap(
        config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, cfg: KhazadConfig) -> None:
    start_proxy(config_path, processes, zctx, env=TINY_HWM_ENV)
    reported: list[tuple[str, str, int, int]] = []
    logged: list[str] = []
    sink = logger.add(lambda msg: logged.append(str(msg)), level="WARNING")
    sub = _ready_subscriber(zctx, cfg, ["alert.flood"], rcvhwm=1, on_gap=lambda *gap: reported.append(gap))
    pub = publisher(zctx, cfg, Stamper("flooder"), key=TEST_PUBLISHER, sndhwm=10)
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        for _ in range(FLOOD_COUNT):  # nobody reads meanwhile: the subscriber is stalled
            pub.publish("alert.flood.x", Alert(kind="flood", message=FLOOD_PAYLOAD))
        got: list[tuple[str, Envelope[Any]]] = []

        def gap_seen() -> bool:
            pub.publish("alert.flood.x", Alert(kind="flood", message="marker"))  # a loss shows once something follows it
            _drain(sub, got)
            return sub.tracker.gaps > 0

        eventually(gap_seen, message="the overflow was never detected as a gap")
    finally:
        logger.remove(sink)
        pub.close()
    sender, topic, expected, received = reported[0]
    assert (sender, topic) == ("flooder", "alert.flood.x") and received > expected
    assert sub.tracker.missed >= received - expected > 0
    assert len(got) < FLOOD_COUNT
    assert any("bus gap" in line and "flooder" in line for line in logged)


def test_subscriber_stalled_beyond_transport_heartbeat_survives_and_reports_gap(
        config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, cfg: KhazadConfig) -> None:
    """Regression: with ZMTP heartbeats on pub/sub sockets, a subscriber stalled past the heartbeat timeout lost its
    connection and libzmq 4.3.5 aborted the process on reconnect (``Assertion failed: _input_stopped``)."""
    start_proxy(config_path, processes, zctx, env=TINY_HWM_ENV)
    sub = ActorProcess(STALLED_SUBSCRIBER, config_path, name="stalled",
                       args=["--topic", "alert.stall", "--stall", str(LONG_STALL_S)]).start()
    processes.append(sub)
    eventually(lambda: "ready" in sub.log() or not sub.alive(), message=lambda: sub.log())
    pub = publisher(zctx, cfg, Stamper("staller"), key=TEST_PUBLISHER, sndhwm=10)
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        for _ in range(FLOOD_COUNT):
            pub.publish("alert.stall.x", Alert(kind="flood", message=FLOOD_PAYLOAD))

        def finished() -> bool:
            pub.publish("alert.stall.x", Alert(kind="flood", message="end"))
            return not sub.alive()

        eventually(finished, timeout=LONG_STALL_S + 20, message=lambda: sub.log())
    finally:
        pub.close()
    assert sub.wait(5) == 0, sub.log()
    match = re.search(r"received=(\d+) gaps=(\d+) missed=(\d+)", sub.log())
    assert match, sub.log()
    received, gaps, missed = map(int, match.groups())
    assert gaps >= 1 and missed >= 1 and received < FLOOD_COUNT


@pytest.mark.parametrize(("kind", "heartbeat"), [
    (zmq.PUB, False), (zmq.SUB, False), (zmq.XPUB, False), (zmq.XSUB, False), (zmq.DEALER, True), (zmq.ROUTER, True),
])
def test_socket_policy_linger_zero_and_zmtp_heartbeat_only_on_request_reply(
        zctx: zmq.Context, kind: int, heartbeat: bool) -> None:
    sock = sockets.configure(zctx.socket(kind))
    try:
        assert sock.getsockopt(zmq.LINGER) == 0
        assert (sock.getsockopt(zmq.HEARTBEAT_IVL) > 0) is heartbeat
        assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
    finally:
        sock.close(0)


# ------------------------------------------------------------------------------------------------------------------
# Sequence tracking (unit)
# ------------------------------------------------------------------------------------------------------------------


def _env(seq: int, incarnation: int = 1, sender: str = "a") -> Envelope[Any]:
    return Envelope(sender=sender, incarnation=incarnation, seq=seq, mono_ns=0, wall_ns=0, body=Heartbeat(actor="a"))


def test_sequence_tracker_counts_a_gap_and_reports_it_once() -> None:
    seen: list[tuple[str, str, int, int]] = []
    t = SequenceTracker(lambda *gap: seen.append(gap))
    assert [t.check("x", _env(s)) for s in (1, 2, 5, 6)] == [0, 0, 2, 0]
    assert (t.gaps, t.missed, seen) == (1, 2, [("a", "x", 3, 5)])


def test_sequence_tracker_restart_is_not_a_gap_and_topics_are_separate() -> None:
    t = SequenceTracker()
    t.check("x", _env(1))
    t.check("x", _env(2))
    assert t.check("x", _env(1, incarnation=2)) == 0  # the sender restarted
    assert t.check("y", _env(7)) == 0  # first sight of another topic
    assert t.check("x", _env(1, sender="b")) == 0  # another sender
    assert t.gaps == 0


def test_sequence_tracker_forget_drops_only_topics_no_longer_covered() -> None:
    t = SequenceTracker()
    for topic in (topics.market_data("AAPL"), topics.market_data("MSFT"), topics.fill("AAPL")):
        t.check(topic, _env(3))
    # md.MSFT is still subscribed on its own
    assert t.forget(topics.MARKET_DATA_PREFIX, keep=(topics.market_data("MSFT"),)) == 1
    assert t.check(topics.market_data("AAPL"), _env(9)) == 0  # starts afresh: no gap
    assert t.check(topics.market_data("MSFT"), _env(9)) == 5  # still tracked: a real gap
    assert t.check(topics.fill("AAPL"), _env(4)) == 0
    assert t.gaps == 1


def test_resubscribe_after_unsubscribe_reports_no_false_gap_through_the_proxy(
        proxy: ActorProcess, zctx: zmq.Context, cfg: KhazadConfig) -> None:
    sub = _ready_subscriber(zctx, cfg, [topics.market_data("X"), "alert.ctl"])
    pub = publisher(zctx, cfg, Stamper("md-pub"), key="gateway")  # market data is the gateway's
    got: list[tuple[str, Envelope[Any]]] = []

    def tick(i: int) -> None:
        pub.publish(topics.market_data("X"), Alert(kind="t", severity="info", message=str(i)))

    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        for i in range(5):
            tick(i)
        eventually(lambda: _drain(sub, got) >= 5, message="first five events")
        sub.unsubscribe(topics.market_data("X"))
        for i in range(5, 10):  # published while nobody listens: dropped by the SUB, and not a loss
            tick(i)
        # one pipe from this publisher to the subscriber, in order: once the marker is here, 5..9 were filtered
        pub.publish("alert.ctl.marker", Alert(kind="t", severity="info", message="-1"))
        eventually(lambda: _drain(sub, got) and got[-1][0] == "alert.ctl.marker", message="the marker")
        sub.subscribe(topics.market_data("X"))
        sub.wait_ready(pub)
        for i in range(10, 15):
            tick(i)
        eventually(lambda: _drain(sub, got) >= 11, message="events after the re-subscribe")
        mine = [int(env.body.message) for topic, env in got if topic == topics.market_data("X")]
        assert mine == [*range(5), *range(10, 15)]
        assert (sub.tracker.gaps, sub.tracker.missed) == (0, 0)
    finally:
        pub.close()
        sub.close()


def test_sequence_tracker_duplicate_does_not_lower_the_mark() -> None:
    t = SequenceTracker()
    for s in (1, 2, 3):
        t.check("x", _env(s))
    assert t.check("x", _env(2)) == 0  # duplicate / reordered: not a loss
    assert t.check("x", _env(4)) == 0  # and not a false gap afterwards
    assert t.gaps == 0
