"""Issue 14, item 7 and the minor findings about kills and approvals, against real processes.

Seen on main: ``khazad kill`` took 24 s with the risk governor SIGSTOPped, though the gateway had confirmed in
1 ms; a kill reason of only spaces, or full of ANSI escapes, was accepted; the gateway answered ``Duplicate`` to an
approval it never checked.

Real processes: proxy, gateway on the simulator, risk governor, order manager; the real CLI as a process.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from bus.approval import load_approval_key, sign
from bus.messages import (
    GatewayStatus, GetRiskState, GetStatus, Instrument, OrderSpec, Rejected, RiskStateReply,
    SubmitAck, SubmitOrder,
)
from sdk import KhazadClient
from tests.support.sim_state import sim_order
from tests.support.waiting import eventually
from tests.security.chain import Chain, RawDealer, raw_request, running_chain

ORDER_TIMEOUT_S = 20.0
#: The behaviour under test is wall time: the answer within the gateway's confirmation + 1 s; generous for a
#: loaded 2-core machine (a CLI process start included), far below the 24 s seen on main.
KILL_ANSWER_BOUND_S = 5.0
WORKING_AT_SIM = ("PreSubmitted", "Submitted", "PendingCancel", "PendingSubmit", "ApiPending")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with running_chain(tmp_path_factory.mktemp("sec-kill"), ("gateway", "risk", "orders"), client_id=33) as c:
        yield c


def _working_at_sim(chain: Chain) -> list[dict[str, Any]]:
    return [o for o in chain.sim.state()["orders"].values() if o["status"] in WORKING_AT_SIM]


def _quote(ticks: Any) -> Any:
    deadline = time.monotonic() + ORDER_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        tick = ticks.get(left)
        if tick is not None and tick.bid and tick.ask:
            return tick
    raise AssertionError("no two-sided quote")


def _resume(chain: Chain) -> None:
    out = chain.khazad("resume", "--reason", "security test done")
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    gw = chain.client("gateway")
    eventually(lambda: gw.call(GetStatus()).trading_state == "ACTIVE", message="gateway ACTIVE again")


def test_gateway_answers_duplicate_only_to_an_approval_it_verified(chain: Chain) -> None:
    key = load_approval_key(chain.cfg, env={})
    spec = OrderSpec(strategy_id="direct", client_order_id="dup-1", instrument=Instrument(symbol="AAPL"), side="BUY",
                     quantity=1, order_type="LMT", limit_price=1.0)
    first = chain.call("gateway", SubmitOrder(order=spec, approval=sign(key, spec, ttl_s=10)))
    assert isinstance(first, SubmitAck) and first.status != "Duplicate", first
    # a forged approval (not the governor's signature) for the same order: refused, not "Duplicate"
    genuine = sign(key, spec, ttl_s=10)
    forged = msgspec.structs.replace(genuine, signature="0" * 64)
    reply = chain.call("gateway", SubmitOrder(order=spec, approval=forged))
    assert isinstance(reply, Rejected) and reply.code == "approval.bad_signature", reply
    # a genuine approval of another order: refused too
    other = msgspec.structs.replace(spec, quantity=2)
    reply = chain.call("gateway", SubmitOrder(order=spec, approval=sign(key, other, ttl_s=10)))
    assert isinstance(reply, Rejected) and reply.code == "approval.wrong_order", reply
    # an approval it can verify: the existing order, "Duplicate", no second IB order
    again = chain.call("gateway", SubmitOrder(order=spec, approval=genuine))
    assert isinstance(again, SubmitAck) and again.status == "Duplicate" and again.ib_order_id == first.ib_order_id
    # the first ack may come before the order has left the gateway's pacer: wait until IB holds it, then count
    state = chain.sim.wait_for(lambda s: sim_order(s, "direct/dup-1"), what="the order at IB")
    assert len([o for o in state["orders"].values() if o["orderRef"] == "direct/dup-1"]) == 1


def test_kill_with_risk_stopped_answers_within_a_second_of_the_gateway_confirmation(chain: Chain) -> None:
    with KhazadClient("killed", config=chain.cfg) as c:
        ticks = c.ticks("AAPL")
        c.subscribe_market_data("AAPL")
        tick = _quote(ticks)
        placed = c.place_limit_order("AAPL", "BUY", 1, round(tick.bid * 0.97, 2))
        c.wait_for_order(placed.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
    assert _working_at_sim(chain)
    risk = chain.procs["risk"]
    risk.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        out = chain.khazad("kill", "--reason", "risk is stuck", "--json")
        elapsed = time.monotonic() - t0
    finally:
        risk.signal(signal.SIGCONT)
    try:
        result = json.loads(out.stdout)
        assert out.returncode == 0, (out.returncode, out.stdout[-3000:], out.stderr[-2000:])
        assert result["gateway"]["status"] == "confirmed", result["gateway"]
        assert result["risk"]["status"] == "pending", result["risk"]
        assert result["bus"]["status"] == "broadcast", result["bus"]
        assert elapsed < KILL_ANSWER_BOUND_S, f"khazad kill answered after {elapsed:.2f}s with risk stopped"
        assert not _working_at_sim(chain), _working_at_sim(chain)
        # the stuck leg learns of the kill once it runs again (the broadcast and its request)
        rc = chain.client("risk")
        eventually(lambda: isinstance(r := rc.call(GetRiskState()), RiskStateReply) and r.global_state == "HALTED",
                   message="risk HALTED once it runs again")
    finally:
        _resume(chain)
    print(f"khazad kill with risk SIGSTOPped answered in {elapsed:.2f}s (gateway {result['gateway']['detail']})")


@pytest.mark.parametrize("reason", ["   ", "\x1b[2J\x1b[31mall good\x1b[0m", "ok\nFAKE LOG LINE", "bell\x07"])
def test_kill_reason_blank_or_with_control_characters_is_refused(chain: Chain, reason: str) -> None:
    try:
        out = chain.khazad("kill", "--reason", reason)
        assert out.returncode == 4 and "KILL NOT SENT" in out.stderr, (out.returncode, out.stderr[-2000:])
        # a hostile process skipping the CLI's checks: the gateway refuses it as a bad request
        dealer = RawDealer(chain.ctx, chain.cfg.bus.gateway)
        try:
            dealer.send(raw_request({"type": "kill", "kill_id": "k-bad-reason", "scope": "all", "reason": reason}))
            env = dealer.recv(10.0)
        finally:
            dealer.close()
        assert env is not None and isinstance(env.body, Rejected) and env.body.code == "bad_request", env
        st = chain.call("gateway", GetStatus())
        assert isinstance(st, GatewayStatus) and st.trading_state == "ACTIVE", st
    finally:
        st = chain.call("gateway", GetStatus())
        if not (isinstance(st, GatewayStatus) and st.trading_state == "ACTIVE"):
            _resume(chain)
    assert "\x1b" not in chain.procs["gateway"].log()

