"""One authority for the trading state (issue 19, item 5), end to end: the real gateway on the TWS simulator, the
real risk governor, the operator's kill and resume as ``khazad kill``/``resume`` send them, and the real SDK.

The risk governor alone publishes ``state.trading``, one event per change, with one persisted epoch sequence, each
event naming its cause and origin; the gateway's halt latch stays an interlock (it refuses orders while the
governor is stopped) that the governor mirrors from the gateway's heartbeats. Every count of events waits with
:meth:`~tests.support.events.EventRecorder.flush` until everything both actors published has arrived.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import registry, topics
from bus.approval import load_approval_key, sign
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import (
    Ack,
    GetRiskState,
    GetStatus,
    GetTradingState,
    Rejected,
    SetTradingState,
    SubmitOrder,
    TradingStateEvent,
)
from bus.sync_client import SyncClient
from cli.kill import send_kill
from cli.resume import send_resume
from sdk import KhazadClient
from tests.support.builders import order
from tests.support.clients import sync_client
from tests.support.config import gateway_extra, write_config
from tests.support.events import EventRecorder
from tests.support.processes import ActorProcess, start_gateway, start_ready
from tests.support.waiting import eventually

GATEWAY = registry.GATEWAY.name
RISK = registry.RISK.name
#: generous: a loaded 2-core machine runs several suites at once
WAIT_S = 20.0
#: the gateway's kill sweep is verified against IB's open orders: the CLI waits for it
KILL_TIMEOUT_S = 20.0
#: a governor whose disconnect breaker does not trip while the gateway restarts (its own changes would count)
PATIENT_GOVERNOR = {"KHAZAD__BUS__HEARTBEAT_LIVENESS": "100"}


@pytest.fixture
def sim() -> Iterator[Any]:
    from sim.testing import running_sim

    with running_sim(seed=19) as handle:
        yield handle


@pytest.fixture
def config_path(tmp_path: Path, sim: Any) -> Path:
    return write_config(tmp_path, extra=gateway_extra(sim.port, client_id=19, kill_verify_timeout_s=10.0))


@pytest.fixture
def states(proxy: ActorProcess, cfg: KhazadConfig, zctx: zmq.Context) -> Iterator[EventRecorder]:
    """``state.trading`` and the heartbeats of the gateway and the governor (for :meth:`EventRecorder.flush`)."""
    rec = EventRecorder(zctx, cfg, [topics.TRADING_STATE, topics.heartbeat(GATEWAY), topics.heartbeat(RISK)],
                        name="test-trading-states")
    yield rec
    rec.close()


@pytest.fixture
def desk(states: EventRecorder, config_path: Path, processes: list[ActorProcess],
         zctx: zmq.Context) -> dict[str, ActorProcess]:
    """A READY gateway on the simulator and a ready risk governor, real processes."""
    return {GATEWAY: start_gateway(config_path, processes, zctx),
            RISK: start_ready(RISK, config_path, processes, zctx, env=PATIENT_GOVERNOR)}


@pytest.fixture
def governor(cfg: KhazadConfig, zctx: zmq.Context) -> Iterator[SyncClient]:
    cl = sync_client(zctx, cfg, "risk", stamper=Stamper("test-operator"), timeout_s=3.0, retries=0)
    yield cl
    cl.close()


def kill(cfg: KhazadConfig, reason: str) -> str:
    """``khazad kill``: returns the kill id once the gateway confirmed the sweep."""
    outcome = send_kill(cfg, reason=reason, timeout_s=KILL_TIMEOUT_S, retries=0, kill_origin="ops@test")
    assert outcome.gateway.ok, outcome.to_dict()
    return outcome.command.kill_id


def resume(cfg: KhazadConfig, reason: str) -> None:
    outcome = send_resume(cfg, reason=reason, resume_origin="ops@test")
    assert outcome.gateway.ok and outcome.risk.ok, outcome.to_dict()


def changes(states: EventRecorder, mark: int) -> list[tuple[str, TradingStateEvent]]:
    """Every trading-state event (sender, event) since ``mark``, once both actors' earlier events have arrived."""
    states.flush(GATEWAY, RISK)
    return states.since(mark, topics.TRADING_STATE, TradingStateEvent)


def restart_gateway(desk: dict[str, ActorProcess], config_path: Path, processes: list[ActorProcess],
                    zctx: zmq.Context) -> None:
    desk[GATEWAY].signal(signal.SIGKILL)
    desk[GATEWAY].wait(10)
    desk[GATEWAY] = start_gateway(config_path, processes, zctx)


def test_one_halt_has_one_epoch_in_every_event_after_a_gateway_restart(desk, states, governor, cfg, config_path,
                                                                        processes, zctx) -> None:
    kill(cfg, "first halt")
    resume(cfg, "first resume")
    # changes only the governor sees move its epoch: before item 5 the gateway's own counter fell behind here
    for state in ("HALTED", "ACTIVE"):
        assert isinstance(governor.call(SetTradingState(scope="symbol:MSFT", state=state, reason="ops")), Ack)
    restart_gateway(desk, config_path, processes, zctx)
    before = eventually(lambda: (r := governor.call(GetRiskState())).scope_states == {} and r, WAIT_S,
                        message="the governor settled after the gateway's restart")
    assert before.global_state == "ACTIVE"

    mark = states.mark()
    kill_id = kill(cfg, "second halt")
    halt = changes(states, mark)
    assert [sender for sender, _ in halt] == [RISK], halt  # one event, from the one authority
    ((_, ev),) = halt
    assert (ev.scope, ev.state, ev.epoch) == ("all", "HALTED", before.epoch + 1)
    assert (ev.cause, ev.kill_id, ev.origin) == ("kill", kill_id, "ops@test")  # it names its origin
    # the gateway's latch, mirrored from its heartbeats, adds no event and no epoch
    gw_latch = states.heartbeat_detail(GATEWAY, lambda d: d.get("halted") == "all")
    assert gw_latch["trading"] == "HALTED"
    after = governor.call(GetTradingState())
    assert after.epoch == ev.epoch and [(s.scope, s.cause, s.kill_id) for s in after.scopes] == [
        ("all", "kill", kill_id)]


def test_resume_publishes_exactly_one_event_naming_its_origin(desk, states, governor, cfg) -> None:
    kill(cfg, "halt to resume")
    halted = governor.call(GetTradingState())
    mark = states.mark()
    resume(cfg, "all clear")
    resumed = changes(states, mark)
    assert [(s, ev.scope, ev.state, ev.cause, ev.origin) for s, ev in resumed] == [
        (RISK, "all", "ACTIVE", "resume", "ops@test")]
    assert resumed[0][1].epoch == halted.epoch + 1
    states.heartbeat_detail(GATEWAY, lambda d: d.get("halted") == "")  # the gateway's latch is released too
    assert changes(states, mark) == resumed  # and its release, mirrored, changed nothing more


def test_strategy_connecting_during_a_halt_sees_halted_before_any_order(desk, states, cfg) -> None:
    kill_id = kill(cfg, "halt before the strategy connects")
    states.flush(GATEWAY, RISK)  # the halt's event is long gone: nothing more is published while it holds
    with KhazadClient("latecomer", config=cfg) as c:
        assert c.trading_state() == "HALTED"  # at once: the client asked the governor when it connected
        why = c.trading_state_of("all")
        assert why is not None and (why.cause, why.kill_id) == ("kill", kill_id)


def test_gateway_refuses_orders_while_the_governor_is_stopped_after_a_kill(desk, states, cfg, zctx) -> None:
    kill(cfg, "halt, then the governor freezes")
    desk[RISK].signal(signal.SIGSTOP)
    gateway = sync_client(zctx, cfg, "gateway", key="orders", stamper=Stamper("orders"), timeout_s=5.0, retries=0)
    try:
        spec = order(strategy="s1", coid="while-risk-stopped")
        # an approval that verifies (signed with the governor's key): only the gateway's own latch can refuse it
        approval = sign(load_approval_key(cfg, {}), spec, ttl_s=30.0)
        refused = gateway.call(SubmitOrder(order=spec, approval=approval))
        assert isinstance(refused, Rejected) and refused.code == "halted", refused
        assert gateway.call(GetStatus()).trading_state == "HALTED"
    finally:
        desk[RISK].signal(signal.SIGCONT)
        gateway.close()


def test_a_governor_that_missed_the_kill_mirrors_the_gateways_latch_and_one_resume_clears_it(
        desk, states, governor, cfg, config_path, processes, zctx) -> None:
    desk[RISK].signal(signal.SIGKILL)
    desk[RISK].wait(10)
    outcome = send_kill(cfg, reason="while the governor is down", timeout_s=KILL_TIMEOUT_S, retries=0)
    assert outcome.gateway.ok and not outcome.risk.ok
    mark = states.mark()
    desk[RISK] = start_ready(RISK, config_path, processes, zctx, env=PATIENT_GOVERNOR)
    mirrored = eventually(lambda: [ev for s, ev in states.since(mark, topics.TRADING_STATE, TradingStateEvent)
                                   if ev.state == "HALTED"], WAIT_S, message="the latch mirrored")
    assert [(ev.scope, ev.cause, ev.origin) for ev in mirrored] == [("all", "gateway_latch", GATEWAY)]
    assert governor.call(GetTradingState()).global_state == "HALTED"
    mark = states.mark()
    resume(cfg, "all clear")
    resumed = changes(states, mark)
    assert [(ev.scope, ev.state) for _, ev in resumed] == [("all", "ACTIVE")], resumed
    assert governor.call(GetTradingState()).global_state == "ACTIVE"
