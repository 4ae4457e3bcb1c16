"""Issue 14, items 1 and 2: "no approval, no order" and "resume is the only way back" hold against any process on
the machine, not just honest ones.

The whole system as ``make run`` starts it (run_all.py, supervisord, every actor, the simulator), with its default
configuration: the bus is authenticated and each key's role comes from the operator's allow-list. The attacker is
a local process holding what a strategy process holds, the key of strategy ``momo`` (on a plain bus: nothing,
it just connects). Each test is one finding of the issue; the simulator's own state is the ground truth.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from bus import topics
from bus.approval import load_approval_key, sign
from bus.messages import (
    AccountReply,
    Alert,
    CancelAllOrders,
    CancelOrder,
    CheckOrder,
    FillEvent,
    GatewayStatus,
    GetAccount,
    GetRiskState,
    GetStatus,
    Instrument,
    Kill,
    ListOrders,
    OrderReply,
    Ping,
    PlaceOrder,
    Pong,
    Rejected,
    Resume,
    RiskDecision,
    SubmitOrder,
    TradingStateEvent,
    UnsubscribeMarketData,
)
from tests.support.local_process import (
    REFUSED_TIMEOUT_S,
    answers,
    client,
    khazad,
    order,
    publisher,
    seen_before_marker,
    sim_refs,
    sim_working,
    subscriber,
)
from tests.support.system import System, running_system
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)

#: the attacker's key: a strategy's (what any strategy process on this host holds)
ATTACKER = "momo"
VICTIM = "other"
OPERATOR = "operator"
#: a BUY limit this far below the market stays working at the simulator (AAPL trades near 190)
FAR_BELOW = 100.0
WAIT_S = 30.0
#: no example strategy (the attacker is the only other client); a collar wide enough for resting limit orders
EXTRA = """
[strategy]
enabled = false

[risk.limits]
price_collar_pct = 60
duplicate_window_s = 0
"""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("local-attacks")
    with running_system(tmp, extra=EXTRA) as s:
        ctx = zmq.Context()
        try:  # "up" means every actor alive and IB READY; the governor approves once it has the gateway's snapshot
            risk = client(ctx, s.cfg, "risk", OPERATOR)
            eventually(lambda: getattr(answers(risk, GetRiskState()), "ready", False), WAIT_S,
                       message="the risk governor ready")
        finally:
            ctx.destroy(linger=0)
        yield s


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _operator_places(system: System, ctx: zmq.Context, strategy: str, coid: str) -> str:
    """A working order of ``strategy``, placed the honest way (through the order manager, approved by risk)."""
    om = client(ctx, system.cfg, "orders", OPERATOR, timeout_s=WAIT_S)
    spec = order(strategy, coid, limit=FAR_BELOW)
    reply = om.call(PlaceOrder(order=spec))
    assert isinstance(reply, OrderReply) and reply.order.status not in ("RiskRejected", "GatewayRejected"), reply
    eventually(lambda: sim_working(system.sim(), spec.order_ref), WAIT_S, message=f"{spec.order_ref} working")
    om.close()
    return spec.order_ref


def test_approval_then_submit_straight_to_the_gateway_is_refused(system: System, ctx: zmq.Context) -> None:
    spec = order(ATTACKER, "bypass-1", qty=5)
    decision = client(ctx, system.cfg, "risk", ATTACKER).call(CheckOrder(order=spec))
    # risk gives approvals to the order manager only; a stolen approval (the signing key is a file on this host)
    # must not get through either: the gateway takes orders from the order manager only
    approval = decision.approval if isinstance(decision, RiskDecision) and decision.approved else \
        sign(load_approval_key(system.cfg), spec, ttl_s=10.0)
    submitted = client(ctx, system.cfg, "gateway", ATTACKER).call(SubmitOrder(order=spec, approval=approval))
    assert isinstance(submitted, Rejected) and submitted.code == "unauthorized", submitted
    assert isinstance(decision, Rejected) and decision.code == "unauthorized", decision
    assert spec.order_ref not in sim_refs(system.sim())
    listed = client(ctx, system.cfg, "orders", OPERATOR).call(ListOrders(filter="all"))
    assert spec.order_ref not in {o.spec.order_ref for o in listed.orders}


def test_placing_or_cancelling_as_another_strategy_is_refused(system: System, ctx: zmq.Context) -> None:
    victims = _operator_places(system, ctx, VICTIM, "victim-1")
    om = client(ctx, system.cfg, "orders", ATTACKER, timeout_s=WAIT_S)
    placed = om.call(PlaceOrder(order=order(VICTIM, "spoof-1", limit=FAR_BELOW)))
    cancelled = om.call(CancelOrder(strategy_id=VICTIM, client_order_id="victim-1"))
    cancelled_all = om.call(CancelAllOrders(strategy_id=VICTIM))
    listed = om.call(ListOrders(strategy_id=VICTIM))
    for reply in (placed, cancelled, cancelled_all, listed):
        assert isinstance(reply, Rejected) and reply.code == "unauthorized", reply
    state = system.sim()
    assert f"{VICTIM}/spoof-1" not in sim_refs(state)
    assert sim_working(state, victims)
    # its own orders it may place
    own = om.call(PlaceOrder(order=order(ATTACKER, "own-1", limit=FAR_BELOW)))
    assert isinstance(own, OrderReply) and own.order.status != "RiskRejected", own


def test_unsubscribing_another_subscribers_market_data_is_refused(system: System, ctx: zmq.Context) -> None:
    _operator_places(system, ctx, VICTIM, "md-1")  # risk prices every check: it subscribes AAPL as "risk"
    gw = client(ctx, system.cfg, "gateway", OPERATOR)
    before = eventually(lambda: (s := gw.call(GetStatus())).market_data.get("AAPL") and s, WAIT_S,
                        message="risk's AAPL subscription at the gateway")
    reply = client(ctx, system.cfg, "gateway", ATTACKER).call(UnsubscribeMarketData(symbol="AAPL", subscriber="risk"))
    assert isinstance(reply, Rejected) and reply.code == "unauthorized", reply
    after = gw.call(GetStatus())
    assert isinstance(after, GatewayStatus) and after.market_data.get("AAPL") == before.market_data["AAPL"]


def test_fake_fill_from_a_strategy_is_dropped_and_pnl_unchanged(system: System, ctx: zmq.Context) -> None:
    portfolio = client(ctx, system.cfg, "portfolio", OPERATOR)
    before = portfolio.call(GetAccount())
    assert isinstance(before, AccountReply)
    observer = subscriber(ctx, system.cfg, OPERATOR, [topics.FILL_PREFIX, topics.alert("strategy")])
    pub = publisher(ctx, system.cfg, ATTACKER, "gateway")  # the envelope claims to be the gateway
    fake = FillEvent(exec_id="fake.01", exec_key="fake", order_ref=f"{ATTACKER}/fake-1", perm_id=1, ib_order_id=1,
                     instrument=Instrument(symbol="AAPL"), side="BUY", quantity=40_000, price=1.0)
    through = seen_before_marker(pub, observer, topics.fill("AAPL"), fake, topics.alert("strategy"),
                                 Alert(kind="strategy", severity="info", message="marker", source=ATTACKER))
    pub.close()
    observer.close()
    assert through == [], "the proxy forwarded a fill published with a strategy's key"
    after = portfolio.call(GetAccount())
    assert after.snapshot.strategy_pnl.get(ATTACKER) == before.snapshot.strategy_pnl.get(ATTACKER)
    assert not [p for p in after.snapshot.positions if p.quantity >= 40_000]
    # and risk still takes its orders (a fake 40,000 fill made it reject everything until a restart)
    om = client(ctx, system.cfg, "orders", ATTACKER, timeout_s=WAIT_S)
    own = om.call(PlaceOrder(order=order(ATTACKER, "after-fake", limit=FAR_BELOW)))
    assert isinstance(own, OrderReply) and own.order.status != "RiskRejected", own


def test_no_key_gets_no_connection_to_any_service_or_the_proxy(system: System, ctx: zmq.Context) -> None:
    for service in ("gateway", "risk", "orders", "portfolio", "monitor"):
        plain = client(ctx, system.cfg, service, None, timeout_s=REFUSED_TIMEOUT_S)
        assert answers(plain, Ping()) is None, f"{service} answered a process without a key"
        plain.close()
    # the proxy's subscriber side: not a single heartbeat (the proxy beats every 0.2 s here)
    listener = subscriber(ctx, system.cfg, None, [topics.HEARTBEAT_PREFIX], ready=False)
    assert listener.recv(REFUSED_TIMEOUT_S) is None
    listener.close()
    # the proxy's publisher side: a fill from a keyless process never arrives; the gateway's own key does
    observer = subscriber(ctx, system.cfg, OPERATOR, [topics.fill("ZZZZ")])
    plain_pub = publisher(ctx, system.cfg, None, "gateway")
    fake = FillEvent(exec_id="nokey.01", exec_key="nokey", order_ref=f"{ATTACKER}/nokey", instrument=Instrument(
        symbol="ZZZZ"), side="BUY", quantity=1, price=1.0)
    for _ in range(10):
        plain_pub.publish(topics.fill("ZZZZ"), fake)
    got = observer.recv(REFUSED_TIMEOUT_S)
    assert got is None, got
    plain_pub.close()
    observer.close()


def test_key_added_while_running_is_admitted_and_a_removed_key_is_refused(system: System, ctx: zmq.Context) -> None:
    made = khazad(system.config_path, "keys", "create", "newbie", "--role", "strategy")
    assert made.returncode == 0, made.stdout + made.stderr
    om = client(ctx, system.cfg, "orders", "newbie", timeout_s=REFUSED_TIMEOUT_S)
    pong = eventually(lambda: answers(om, Ping()), WAIT_S, message="the new key admitted without a restart")
    assert isinstance(pong, Pong)
    assert isinstance(om.call(PlaceOrder(order=order("newbie", "n-1", limit=FAR_BELOW))), OrderReply)
    pub = publisher(ctx, system.cfg, "newbie", "strategy.newbie")
    observer = subscriber(ctx, system.cfg, OPERATOR, [topics.alert("strategy")])

    def marker_passes(n: int) -> bool:
        body = Alert(kind="strategy", severity="info", message=f"newbie-{n}", source="newbie")
        pub.publish(topics.alert("strategy"), body)
        while (got := observer.recv(0.3)) is not None:
            if got[1].body == body:
                return True
        return False

    assert eventually(lambda: marker_passes(0), WAIT_S, message="the new key publishes")
    removed = khazad(system.config_path, "keys", "remove", "newbie")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    # its open connections: every request refused, every message dropped (CURVE checked it only at the handshake)
    refused = eventually(lambda: isinstance(r := answers(om, Ping()), Rejected) and r, WAIT_S,
                         message="the removed key's open connection refused")
    assert refused.code == "unauthorized"
    counter = iter(range(1, 1000))
    eventually(lambda: not marker_passes(next(counter)), WAIT_S, message="the removed key's messages dropped")
    assert not marker_passes(1000)
    # and a new connection with it gets none
    fresh = client(ctx, system.cfg, "orders", "newbie", timeout_s=REFUSED_TIMEOUT_S)
    assert answers(fresh, Ping()) is None
    for sock in (om, fresh, pub, observer):
        sock.close()


def test_resume_or_kill_from_a_strategy_and_a_fake_control_resume_change_nothing(system: System,
                                                                                   ctx: zmq.Context) -> None:
    """Last: it halts the system."""
    working = _operator_places(system, ctx, VICTIM, "before-kill")
    killed = khazad(system.config_path, "kill", "--reason", "security test")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert not sim_working(system.sim(), working)
    gw, risk = client(ctx, system.cfg, "gateway", OPERATOR), client(ctx, system.cfg, "risk", OPERATOR)
    assert gw.call(GetStatus()).trading_state == "HALTED" and risk.call(GetRiskState()).global_state == "HALTED"
    epoch = gw.call(GetStatus()).epoch
    # a strategy asks the gateway and the governor to resume, and kills (a kill is an operator's)
    for service in ("gateway", "risk"):
        attacker = client(ctx, system.cfg, service, ATTACKER)
        for body in (Resume(scope="all", reason="let me trade", origin="momo"),
                     Kill(kill_id="k-momo", reason="mine", origin="momo")):
            reply = attacker.call(body)
            assert isinstance(reply, Rejected) and reply.code == "unauthorized", (service, reply)
    # and publishes a resume, and a trading state, on the bus
    observer = subscriber(ctx, system.cfg, OPERATOR, [topics.RESUME, topics.TRADING_STATE, topics.alert("strategy")])
    pub = publisher(ctx, system.cfg, ATTACKER, "cli-momo")
    marker = Alert(kind="strategy", severity="info", message="marker", source=ATTACKER)
    assert seen_before_marker(pub, observer, topics.RESUME, Resume(scope="all", reason="fake", origin="momo"),
                              topics.alert("strategy"), marker) == []
    assert seen_before_marker(pub, observer, topics.TRADING_STATE, TradingStateEvent(
        scope="all", state="ACTIVE", epoch=epoch + 1, reason="fake", origin="momo"), topics.alert("strategy"),
        marker) == []
    pub.close()
    observer.close()
    assert gw.call(GetStatus()).trading_state == "HALTED" and risk.call(GetRiskState()).global_state == "HALTED"
    refused = client(ctx, system.cfg, "orders", ATTACKER, timeout_s=WAIT_S).call(
        PlaceOrder(order=order(ATTACKER, "while-halted", limit=FAR_BELOW)))
    assert isinstance(refused, Rejected) or refused.order.status in ("RiskRejected", "GatewayRejected"), refused
    assert f"{ATTACKER}/while-halted" not in {r for r in sim_refs(system.sim()) if sim_working(system.sim(), r)}
