"""The Actor base: lifecycle table and transitions, the error policy (typed rejection, keep serving, exit 70 when
errors repeat), and the bounded inbox (memory bounded, the overflow reported as a gap, requests still served)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from bus import topics
from bus.actor import Actor
from bus.lifecycle import EXIT_FAULTED, EXIT_OK, LIFECYCLE, MAX_ERRORS, ActorState
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import MAX_TEXT_LENGTH, Alert, GapReport, GetSystemStatus, Ping, Pong, Rejected, Resume
from tests.support.clients import publisher, sync_subscriber
from tests.support.keys import TEST_PUBLISHER
from tests.support.processes import ActorProcess
from tests.support.programs import probe_client, probe_status
from tests.support.waiting import eventually

#: Bound for an in-process actor run in these tests.
RUN_TIMEOUT_S = 20.0
INBOX = 20
FLOOD_COUNT = 2000
FLOOD_PAYLOAD = "x" * MAX_TEXT_LENGTH  # the largest alert message there is: few messages fill the buffers
HWM_ENV = {"KHAZAD__BUS__SEND_HWM": "10", "KHAZAD__BUS__RECV_HWM": "10"}


# ------------------------------------------------------------------------------------------------------------------
# Lifecycle
# ------------------------------------------------------------------------------------------------------------------


def test_lifecycle_table_allows_exactly_the_listed_transitions(cfg: KhazadConfig) -> None:
    for src in ActorState:
        for dst in ActorState:
            a = Actor(cfg, name="table")
            a.state = src
            if dst in LIFECYCLE[src]:
                a._transition(dst)
                assert a.state is dst
            else:
                with pytest.raises(RuntimeError, match="illegal lifecycle transition"):
                    a._transition(dst)
    assert LIFECYCLE[ActorState.STOPPED] == frozenset()  # terminal
    assert all(ActorState.STOPPED in LIFECYCLE[s] or ActorState.STOPPING in LIFECYCLE[s]
               for s in ActorState if s is not ActorState.STOPPED)  # every state can stop


class RecordingActor(Actor):
    """An in-process actor that records its lifecycle and can be told to misbehave."""

    name = "recorder"
    topics = ("rec.",)

    def __init__(self, cfg: KhazadConfig, behaviour: str = "") -> None:
        super().__init__(cfg)
        self.behaviour = behaviour
        self.history: list[ActorState] = []
        self.started = asyncio.Event()

    def _transition(self, new: ActorState) -> None:
        super()._transition(new)
        self.history.append(new)

    async def on_started(self) -> None:
        self.started.set()
        if self.behaviour == "errors":
            for _ in range(MAX_ERRORS + 1):
                self.record_error(RuntimeError("induced"))

    def background_tasks(self) -> list[Any]:
        async def dies() -> None:
            await self.started.wait()
            raise RuntimeError("background task failure")

        return [dies()] if self.behaviour == "task-dies" else []


def _run(actor: RecordingActor, *, stop_when_started: bool) -> int:
    async def scenario() -> int:
        task = asyncio.create_task(actor.run())
        if stop_when_started:
            await asyncio.wait_for(actor.started.wait(), RUN_TIMEOUT_S)
            actor.stop()
        return await asyncio.wait_for(task, RUN_TIMEOUT_S)

    return asyncio.run(scenario())


def test_actor_runs_through_the_lifecycle_and_stops_cleanly(proxy: ActorProcess, cfg: KhazadConfig) -> None:
    actor = RecordingActor(cfg)
    assert _run(actor, stop_when_started=True) == EXIT_OK
    assert actor.history == [ActorState.STARTING, ActorState.RUNNING, ActorState.STOPPING, ActorState.STOPPED]


def test_repeated_errors_fault_the_actor_with_exit_70(proxy: ActorProcess, cfg: KhazadConfig) -> None:
    actor = RecordingActor(cfg, behaviour="errors")
    assert _run(actor, stop_when_started=False) == EXIT_FAULTED
    assert actor.history == [ActorState.STARTING, ActorState.RUNNING, ActorState.FAULTED, ActorState.STOPPING,
                             ActorState.STOPPED]


def test_dying_background_task_faults_the_actor_with_exit_70(proxy: ActorProcess, cfg: KhazadConfig) -> None:
    actor = RecordingActor(cfg, behaviour="task-dies")
    assert _run(actor, stop_when_started=False) == EXIT_FAULTED
    assert ActorState.FAULTED in actor.history and actor.history[-1] is ActorState.STOPPED


def test_stop_before_run_is_not_lost(proxy: ActorProcess, cfg: KhazadConfig) -> None:
    actor = RecordingActor(cfg)
    actor.stop()  # e.g. a signal that arrived while the process was still setting up
    assert _run(actor, stop_when_started=False) == EXIT_OK
    assert ActorState.RUNNING not in actor.history and actor.history[-1] is ActorState.STOPPED


# ------------------------------------------------------------------------------------------------------------------
# Error policy, in a real process
# ------------------------------------------------------------------------------------------------------------------


def test_handler_errors_get_internal_rejections_then_repeated_errors_exit_70(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe()
    cl = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("errors"), retries=0)
    pub = publisher(zctx, cfg, Stamper("errors-pub"), key=TEST_PUBLISHER)
    try:
        for _ in range(5):
            reply = cl.call(GetSystemStatus())
            assert isinstance(reply, Rejected) and reply.code == "internal"
            assert reply.request_type == "get_system_status" and "induced handler failure" in reply.reason
        assert isinstance(cl.call(Ping()), Pong)  # keeps serving
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        pub.publish("alert.test.errors", Alert(kind="test", message="raise"))  # an event handler error counts too
        eventually(lambda: probe_status(zctx, cfg.bus.monitor)["events"] == "1")
        errors = 6
        while errors < MAX_ERRORS:  # up to the limit: still running and answering
            assert isinstance(cl.call(GetSystemStatus()), Rejected)
            errors += 1
        assert isinstance(cl.call(Ping()), Pong) and probe.alive()
        last = cl.call(GetSystemStatus())  # one more than MAX_ERRORS in the window: faulted
        assert isinstance(last, Rejected) and last.code == "internal"
        assert probe.wait(10) == EXIT_FAULTED
    finally:
        pub.close()
        cl.close()
    assert "faulting so supervisord restarts me" in probe.log()


# ------------------------------------------------------------------------------------------------------------------
# Bounded inbox
# ------------------------------------------------------------------------------------------------------------------


def test_bounded_inbox_stays_bounded_keeps_serving_and_reports_the_overflow_as_a_gap(
        zctx: zmq.Context, cfg: KhazadConfig, config_path: Any, processes: list[ActorProcess],
        probe_factory: Callable[..., ActorProcess]) -> None:
    from tests.support.processes import start_proxy

    start_proxy(config_path, processes, zctx, env=HWM_ENV)
    probe_factory(env={"PROBE_INBOX_SIZE": str(INBOX), **HWM_ENV})
    gaps = sync_subscriber(zctx, cfg, [topics.GAP_PREFIX], name="test-gaps")
    pub = publisher(zctx, cfg, Stamper("inbox-flooder"), key=TEST_PUBLISHER, sndhwm=10)
    cl = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("inbox"))
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        gaps.wait_ready(pub)
        pub.publish("alert.test.flood", Alert(kind="test", message="stall"))  # the consumer blocks on this one
        flooded = [0]

        def filled() -> dict[str, str] | None:
            # the tiny HWMs drop most of a burst, how much depends on timing: flood until the inbox is full
            for _ in range(FLOOD_COUNT):
                pub.publish("alert.test.flood", Alert(kind="flood", message=FLOOD_PAYLOAD))
            flooded[0] += FLOOD_COUNT
            s = probe_status(zctx, cfg.bus.monitor)
            return s if s["inbox"] == str(INBOX) else None

        status = eventually(filled, message=lambda: f"the inbox never filled: {probe_status(zctx, cfg.bus.monitor)}")
        assert status["inbox_max"] == str(INBOX) and status["events"] == "1"  # bounded: full, never more
        assert isinstance(cl.call(Ping()), Pong)  # requests are served while events are stuck
        assert cl.call(Resume(reason="unstall")) is not None

        def reported() -> GapReport | None:
            pub.publish("alert.test.flood", Alert(kind="flood", message="marker"))  # a loss shows once something follows
            while (got := gaps.recv(0.05)) is not None:
                if isinstance(got[1].body, GapReport):
                    return got[1].body
            return None

        report = eventually(reported, message="no GapReport on bus.gap.probe")
    finally:
        cl.close()
        pub.close()
        gaps.close()
    assert report.subscriber == "probe" and report.publisher == "inbox-flooder" and report.topic == "alert.test.flood"
    assert report.missed == report.received - report.expected > 0
    assert int(probe_status(zctx, cfg.bus.monitor)["events"]) < flooded[0] + 1

