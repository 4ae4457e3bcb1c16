"""Issue 14, item 4: one strategy cannot freeze the order manager for everyone.

Seen on main: 1,000 ``WaitOrder`` requests (timeout 40 s) from one strategy on its own order filled the order
manager's single shared in-flight limit; other strategies, ``khazad orders`` and the example strategy all timed
out for 40 s, while ``khazad status`` still reported the order manager healthy.

Real processes (proxy, gateway on the simulator, risk governor, order manager, portfolio, monitor), the flood
from one DEALER as a hostile strategy would send it, the other clients as they really run (the SDK, the CLI and
the example strategy as processes).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus.codec import Stamper, request_codec
from bus.messages import Rejected, WaitOrder
from sdk import KhazadClient
from tests.support.processes import ActorProcess
from tests.support.waiting import eventually
from tests.security.chain import Chain, RawDealer, running_chain

FLOOD = 1000
FLOOD_WAIT_S = 40.0
#: "Answered promptly": generous for a loaded 2-core machine, far below the flood's 40 s.
PROMPT_S = 5.0
ORDER_TIMEOUT_S = 20.0
#: How long the flood's refused part may take to come back (event-driven: returns as soon as it has).
FLOOD_SETTLE_S = 10.0

STRATEGY_EXTRA = """
[strategy]
strategy_id = "example"
symbol = "MSFT"
quantity = 5
interval_s = 0.2
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with running_chain(tmp_path_factory.mktemp("sec-fair"), ("gateway", "risk", "orders", "portfolio", "monitor"),
                       extra=STRATEGY_EXTRA, client_id=32) as c:
        yield c


def _quote(ticks: Any) -> Any:
    deadline = time.monotonic() + ORDER_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        tick = ticks.get(left)
        if tick is not None and tick.bid and tick.ask:
            return tick
    raise AssertionError("no two-sided quote")


def _status(chain: Chain) -> tuple[int, dict[str, Any]]:
    out = chain.khazad("status", "--json")
    return out.returncode, json.loads(out.stdout)


def test_1000_wait_orders_from_one_strategy_starve_nobody_and_status_shows_the_orders_service_degraded(
        chain: Chain) -> None:
    # the flooder's own resting order (a buy well under the market: live, never done)
    with KhazadClient("flood", config=chain.cfg) as c:
        ticks = c.ticks("AAPL")
        c.subscribe_market_data("AAPL")
        tick = _quote(ticks)
        placed = c.place_limit_order("AAPL", "BUY", 1, round(tick.bid * 0.97, 2))
        coid = placed.spec.client_order_id
        c.wait_for_order(coid, "live", timeout=ORDER_TIMEOUT_S)
    code, st = _status(chain)
    assert code == 0, st  # healthy before the flood

    codec = request_codec()
    stamper = Stamper("strategy.flood")
    deadline = time.time_ns() + int((FLOOD_WAIT_S + 5) * 1e9)
    frames = [codec.encode(stamper.stamp(WaitOrder(strategy_id="flood", client_order_id=coid, until="done",
                                                   timeout_s=FLOOD_WAIT_S),
                                         request_id=uuid.uuid4().hex, deadline_wall_ns=deadline))
              for _ in range(FLOOD)]
    flood = RawDealer(chain.ctx, chain.cfg.bus.orders, key="flood", sndhwm=0)  # the strategy's own key
    answers: dict[str, int] = {}

    def drain() -> int:
        while (env := flood.recv(0.0)) is not None:
            body = env.body
            kind = f"rejected:{body.code}" if isinstance(body, Rejected) else type(body).__name__
            answers[kind] = answers.get(kind, 0) + 1
        return sum(answers.values())

    try:
        for frame in frames:
            flood.send(frame)
        flood_started = time.monotonic()
        # the part of the flood over the strategy's own limit is refused at once (typed, never silence); on the
        # old code nothing comes back, and after the bound the flood holds the service all the same
        try:
            eventually(lambda: drain() and answers.get("rejected:busy", 0) + answers.get("OrderReply", 0) > 0,
                       FLOOD_SETTLE_S, message="the flood's refused part")
        except AssertionError:
            pass

        # another strategy places an order: answered promptly
        with KhazadClient("other", config=chain.cfg, timeout_s=PROMPT_S, retries=0) as other:
            t0 = time.monotonic()
            view = other.place_limit_order("AAPL", "BUY", 1, round(tick.bid * 0.97, 2))
            place_s = time.monotonic() - t0
            assert view.status not in ("RiskRejected", "GatewayRejected"), view
            assert place_s < PROMPT_S, f"another strategy's PlaceOrder took {place_s:.2f}s during the flood"
            other.cancel_order(view.spec.client_order_id, reason="test")

        # the operator's view of the orders: answered
        t0 = time.monotonic()
        orders = chain.khazad("orders", "--json", timeout_s=60)
        orders_s = time.monotonic() - t0
        assert orders.returncode == 0, (orders.returncode, orders.stderr[-2000:])

        # while the flood holds, status says the order manager is saturated
        assert time.monotonic() - flood_started < FLOOD_WAIT_S - 10, "too slow to observe the flood while it holds"
        code, st = _status(chain)
        om = next(a for a in st["actors"] if a["name"] == "orders")
        assert code == 1 and om["state"] == "DEGRADED", (code, om)
        assert "saturated" in om["detail"], om
        # the waits are held in the wait pool, not in the shared request slots everyone else needs
        waiting, _ = om["detail"]["waits"].split("/")
        in_flight, _ = om["detail"]["requests"].split("/")
        assert int(waiting) >= 100 and int(in_flight) < 10, om["detail"]

        # and the example strategy trades through it
        example = ActorProcess("examples.simple_strategy", chain.path, name="example").start()
        try:
            eventually(lambda: "-> Filled" in example.log() or not example.alive(), 30,
                       message=lambda: f"a filled order from the example; log:\n{example.log()[-3000:]}")
            assert example.alive(), example.log()[-3000:]
        finally:
            example.stop()
        assert time.monotonic() - flood_started < FLOOD_WAIT_S, "the example only traded once the flood ended"

        drain()
        held = FLOOD - sum(answers.values())
        assert set(answers) <= {"rejected:busy", "OrderReply"}, answers
        assert answers.get("rejected:busy", 0) > 0, f"nothing of the flood was refused: {answers}"
        assert held > 0, answers  # the strategy's own waits within its limit are held, not refused
    finally:
        flood.close()
    print(f"PlaceOrder {place_s:.3f}s, khazad orders {orders_s:.2f}s, flood answers {answers}")

