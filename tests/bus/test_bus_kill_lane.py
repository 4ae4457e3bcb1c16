"""The kill lane (issue 18: "kill and halt on their own socket path"): every actor reads ``control.kill`` on a
subscription of its own, so a kill is seen, and handled by an actor that subscribes to it, even while its main
subscription and inbox are stuck behind other events; the copy that arrives later on the main subscription is not
delivered a second time."""

from __future__ import annotations

import asyncio
from typing import Any

import zmq

from bus import topics
from bus.actor import Actor
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.kill_sightings import DELIVERED_KILLS_KEPT, KillDeliveries
from bus.messages import Alert, Kill
from tests.support.clients import publisher
from tests.support.keys import TEST_PUBLISHER
from tests.support.processes import ActorProcess

#: Bound for each wait of the in-process scenario.
WAIT_S = 10.0
#: The alert the consumer is stuck on, and those queued behind it.
ALERTS = 51
#: An operator's alert: the marker that follows the kill from the same sender.
MARKER_TOPIC = topics.alert("operator")


class StuckActor(Actor):
    """Its consumer blocks on the first ``alert.test.`` event until released; it records the kills it handles."""

    name = "recorder"
    topics = ("alert.test.", MARKER_TOPIC, topics.KILL)

    def __init__(self, cfg: KhazadConfig) -> None:
        super().__init__(cfg)
        self.started = asyncio.Event()
        self.stuck = asyncio.Event()
        self.release = asyncio.Event()
        self.handled: list[str] = []
        self.alerts = 0
        self.kill_handled = asyncio.Event()
        self.alerts_done = asyncio.Event()
        self.marker = asyncio.Event()

    async def on_started(self) -> None:
        self.started.set()

    async def on_event(self, topic: str, env: Any) -> None:
        if isinstance(env.body, Kill):
            self.handled.append(env.body.kill_id)
            self.kill_handled.set()
        elif topic == MARKER_TOPIC:
            self.marker.set()
        elif topic.startswith("alert.test."):
            self.alerts += 1
            if self.alerts == ALERTS:
                self.alerts_done.set()
            self.stuck.set()
            await self.release.wait()


def test_kill_is_seen_and_handled_while_the_main_subscription_is_stuck_and_delivered_once(
    proxy: ActorProcess, cfg: KhazadConfig, zctx: zmq.Context
) -> None:
    actor = StuckActor(cfg)
    events = publisher(zctx, cfg, Stamper("lane-events"), key=TEST_PUBLISHER)
    operator = publisher(zctx, cfg, Stamper("lane-operator"))

    async def scenario() -> tuple[list[str], tuple[str, int, int] | None, int]:
        task = asyncio.create_task(actor.run())
        try:
            await asyncio.wait_for(actor.started.wait(), WAIT_S)
            events.wait_ready_sync(cfg.bus.proxy_backend)
            operator.wait_ready_sync(cfg.bus.proxy_backend)
            events.publish("alert.test.stall", Alert(kind="test", message="stall"))
            await asyncio.wait_for(actor.stuck.wait(), WAIT_S)
            for i in range(ALERTS - 1):  # more events queue behind the stuck one
                events.publish("alert.test.more", Alert(kind="test", message=str(i)))
            operator.publish(topics.KILL, Kill(kill_id="k-lane", reason="test", origin="test"))
            await asyncio.wait_for(actor.kill_handled.wait(), WAIT_S)  # handled through the lane
            seen = actor.kills.latest
            assert actor.alerts == 1  # the main subscription is still stuck on the first event
            actor.release.set()
            await asyncio.wait_for(actor.alerts_done.wait(), WAIT_S)  # the queued events
            # published after the kill by the same sender: once handled, the main subscription's copy of the kill
            # has been through the consumer too
            operator.publish(MARKER_TOPIC, Alert(kind="test", message="marker"))
            await asyncio.wait_for(actor.marker.wait(), WAIT_S)
            return list(actor.handled), seen, actor.alerts
        finally:
            actor.stop()
            await asyncio.wait_for(task, WAIT_S)

    try:
        handled, seen, _ = asyncio.run(scenario())
    finally:
        events.close()
        operator.close()
    assert seen is not None and seen[0] == "k-lane"
    assert handled == ["k-lane"]  # the main subscription's copy (it came after the alerts) was not delivered again


class _Env:
    def __init__(self, sender: str, incarnation: int, seq: int) -> None:
        self.sender, self.incarnation, self.seq = sender, incarnation, seq


def test_kill_deliveries_pass_each_envelope_once_and_forget_the_oldest() -> None:
    d = KillDeliveries()
    assert d.first(_Env("gateway", 1, 7)) is True
    assert d.first(_Env("gateway", 1, 7)) is False  # the other lane's copy
    assert d.first(_Env("cli-x", 1, 7)) is True  # the same kill relayed by another sender is its own envelope
    assert d.first(_Env("gateway", 2, 7)) is True  # a restarted sender (new incarnation)
    for seq in range(100, 100 + DELIVERED_KILLS_KEPT):
        assert d.first(_Env("gateway", 1, seq)) is True
    assert d.first(_Env("gateway", 1, 7)) is True  # forgotten: bounded memory
