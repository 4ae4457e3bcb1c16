"""The actor base records when each actor first saw a kill (the hook the kill benchmark reads): a ``control.kill``
broadcast or a direct ``Kill`` request, published in the heartbeat detail as ``kill_seen``/``kill_sent``.

Real processes over real sockets: the bus proxy and the bus tests' probe actor (tests/support/programs/probe_actor.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from bus import topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.kill_sightings import KILL_SEEN_DETAIL, KILL_SENT_DETAIL
from bus.messages import Ack, GetStatus, Heartbeat, Kill
from bus.pubsub import SyncSubscriber
from tests.support.clients import publisher, sync_subscriber
from tests.support.processes import ActorProcess, wait_serving
from tests.support.programs import PROBE_ACTOR, PROBE_KEY, probe_client
from tests.support.waiting import eventually


def _start_probe(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, cfg: KhazadConfig,
                 topics: str) -> ActorProcess:
    proc = ActorProcess(PROBE_ACTOR, config_path, name="probe",
                        env={"PROBE_NAME": "probe", "PROBE_SERVICE": "monitor", "PROBE_TOPICS": topics}).start()
    processes.append(proc)
    wait_serving(zctx, cfg.bus.monitor, proc, server=PROBE_KEY)
    return proc


def _heartbeat_with(sub: SyncSubscriber, predicate: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        got = sub.recv(0.05)
        if got is not None and isinstance(got[1].body, Heartbeat) and predicate(got[1].body.detail):
            return got[1].body.detail
        return None

    return eventually(check, 10, message="a heartbeat with the expected kill_seen")


def _kill(kill_id: str) -> Kill:
    return Kill(kill_id=kill_id, reason="test", origin="test")


def test_kill_broadcast_recorded_in_heartbeat_without_reaching_on_event(
        proxy: ActorProcess, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    _start_probe(config_path, processes, zctx, cfg, topics="alert.test")  # control.kill is not one of its topics
    hb = sync_subscriber(zctx, cfg, [topics.heartbeat("probe")], name="test-hb")
    pub = publisher(zctx, cfg, Stamper("test-operator"))
    status = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("test"))
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        hb.wait_ready(pub)
        before = time.monotonic_ns()
        env = pub.publish(topics.KILL, _kill("k-broadcast"))
        detail = _heartbeat_with(hb, lambda d: d.get(KILL_SEEN_DETAIL, "").startswith("k-broadcast@"))
        seen_ns = int(detail[KILL_SEEN_DETAIL].rsplit("@", 1)[1])
        assert before <= seen_ns <= time.monotonic_ns()
        assert int(detail[KILL_SENT_DETAIL]) == env.mono_ns
        assert status.call(GetStatus()).detail["events"] == "0"  # the extra subscription never reaches on_event
    finally:
        status.close()
        pub.close()
        hb.close()


def test_kill_request_recorded_first_sighting_kept_and_handler_still_runs(
        proxy: ActorProcess, config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
        cfg: KhazadConfig) -> None:
    _start_probe(config_path, processes, zctx, cfg, topics="alert.test,control.")  # its own control.* subscription
    hb = sync_subscriber(zctx, cfg, [topics.heartbeat("probe")], name="test-hb")
    pub = publisher(zctx, cfg, Stamper("test-operator"))
    client = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("test-cli"))
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        hb.wait_ready(pub)
        before = time.monotonic_ns()
        reply: Any = client.call(_kill("k-direct"))
        after = time.monotonic_ns()
        assert isinstance(reply, Ack) and reply.detail == "1"  # the actor's own Kill handler ran once
        first = _heartbeat_with(hb, lambda d: d.get(KILL_SEEN_DETAIL, "").startswith("k-direct@"))
        seen_ns = int(first[KILL_SEEN_DETAIL].rsplit("@", 1)[1])
        assert before <= seen_ns <= after
        assert before <= int(first[KILL_SENT_DETAIL]) <= after  # the caller's envelope stamp
        pub.publish(topics.KILL, _kill("k-direct"))  # the same kill arriving the other way
        eventually(lambda: client.call(GetStatus()).detail["events"] == "1", 10,
                   message="the broadcast reaching on_event (control.* is the probe's own topic)")
        later = _heartbeat_with(hb, lambda d: KILL_SEEN_DETAIL in d)
        assert later[KILL_SEEN_DETAIL] == first[KILL_SEEN_DETAIL]  # the first sighting is kept
    finally:
        client.close()
        pub.close()
        hb.close()
