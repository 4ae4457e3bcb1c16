"""Every working order at the account is seen (issue 12 item 4): orders of another client id and orders typed into
TWS are published as ``external``, counted in risk's exposure, listed by ``khazad orders --external``, and cancelled
by a kill. Two set-ups, as IB allows them:

* the gateway as client id 0: IB reports every client's orders to it live and binds TWS orders to it
  (reqAutoOpenOrders);
* the gateway as another client id (no master client id): it sees other clients' orders when IB lists them
  (reqAllOpenOrders at start-up, after every gap, in every snapshot and kill sweep).

Real processes: the simulator, the proxy, the gateway, the risk governor and the order manager; the other client is
a real ib_insync connection from this test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bus.messages import GetStatus, Kill, Resume
from tests.support.waiting import eventually
from tests.truth.support import KEEP_ORDERS_ACROSS_GAPS, SETTLE_TIMEOUT_S, SIM_WORKING, Desk, running_desk, spec

OTHER_CLIENT_ID = 5


class OtherProgram:
    """Another program at the same account: its own ib_insync connection (client id 5), on its own event loop
    (``khazad orders`` in this process runs asyncio.run, which leaves no current loop behind)."""

    def __init__(self, ib: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.ib = ib
        self.loop = loop

    def disconnect(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.ib.disconnect()
        asyncio.set_event_loop(None)
        self.loop.close()


def other_client_order(desk: Desk, ref: str, qty: float, limit: float) -> OtherProgram:
    """An order placed by another program (client id 5) over its own connection."""
    from ib_insync import IB, LimitOrder, Stock

    sim = desk.sim
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ib = IB()
    ib.connect("127.0.0.1", sim.port, clientId=OTHER_CLIENT_ID, timeout=10)
    contract = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(contract)
    ib.placeOrder(contract, LimitOrder("BUY", qty, limit, orderRef=ref))
    eventually(lambda: any(o["orderRef"] == ref and o["status"] == "Submitted"
                           for o in sim.call("state")["orders"].values()), SETTLE_TIMEOUT_S,
               message=f"{ref} working at IB")
    return OtherProgram(ib, loop)


def external_refs(desk: Desk) -> dict[str, str]:
    return {o["order_ref"]: o["status"] for o in desk.cli_orders("--external")["orders"]}


def risk_counts_what_works_at_ib(desk: Desk) -> None:
    eventually(lambda: desk.risk_state().working_buy.get("AAPL", 0.0) == desk.sim_working_qty("AAPL", "BUY"),
               SETTLE_TIMEOUT_S, message=lambda: f"risk working buy {desk.risk_state().working_buy} vs IB "
                                                 f"{desk.sim_working_qty('AAPL', 'BUY')}")


def kill_everything(desk: Desk) -> None:
    report = desk.gateway.call(Kill(kill_id=uuid.uuid4().hex[:12], scope="all", reason="test: kill all",
                                    origin="test"))
    assert report.confirmed and report.remaining == 0, report
    assert not [o for o in desk.sim_state()["orders"].values() if o["status"] in SIM_WORKING]
    eventually(lambda: external_refs(desk) == {}, SETTLE_TIMEOUT_S, message="khazad orders --external is empty")
    risk_counts_what_works_at_ib(desk)
    assert desk.sim_working_qty("AAPL", "BUY") == 0
    desk.gateway.call(Resume(scope="all", reason="test over", origin="test"))


@pytest.fixture
def live_desk(tmp_path: Any) -> Iterator[Desk]:
    with running_desk(tmp_path, client_id=0) as d:
        yield d


def test_client_zero_sees_other_clients_and_tws_orders_live_risk_counts_them_and_a_kill_cancels_them(
        live_desk: Desk) -> None:
    desk = live_desk
    ours = spec("ext")
    desk.place_working(ours)
    other = other_client_order(desk, "other-1", 3, 180.0)
    try:
        manual = desk.sim.call("manual_order", symbol="AAPL", action="BUY", quantity=4, order_type="LMT",
                               lmt_price=181.0, order_ref="by-hand")
        assert manual["orderId"] > 0  # bound to client 0: the gateway asked IB for it (reqAutoOpenOrders)
        eventually(lambda: external_refs(desk) == {"other-1": "Submitted", "by-hand": "Submitted"},
                   SETTLE_TIMEOUT_S, message=lambda: f"khazad orders --external: {external_refs(desk)}")
        risk_counts_what_works_at_ib(desk)
        assert desk.risk_state().working_buy["AAPL"] == 1 + 3 + 4
        # the order manager lists only Khazad's orders
        assert [o["spec"]["client_order_id"] for o in desk.cli_orders()["orders"]] == [ours.client_order_id]
        # a fill of another client's order moves IB's position, and risk follows IB
        desk.sim.call("fill", perm_id=desk.sim_order("other-1")["permId"], quantity=1, price=180.0)
        eventually(lambda: desk.risk_state().positions.get("AAPL", 0.0) == desk.sim_position("AAPL") == 1,
                   SETTLE_TIMEOUT_S, message=lambda: f"risk position {desk.risk_state().positions}")
        risk_counts_what_works_at_ib(desk)
        kill_everything(desk)
    finally:
        other.disconnect()


@pytest.fixture
def listing_desk(tmp_path: Any) -> Iterator[Desk]:
    def before(sim: Any) -> None:  # orders that work at IB before the gateway starts
        sim.call("manual_order", symbol="AAPL", action="BUY", quantity=4, order_type="LMT", lmt_price=181.0,
                 order_ref="by-hand")

    with running_desk(tmp_path, client_id=7, before=before, extra=KEEP_ORDERS_ACROSS_GAPS) as d:
        yield d


def test_another_client_id_lists_outside_orders_at_start_and_after_a_gap_and_a_kill_cancels_them(
        listing_desk: Desk) -> None:
    desk = listing_desk
    # at start-up: the TWS order is in the snapshot, in risk's exposure and in khazad orders --external
    assert external_refs(desk) == {"by-hand": "Submitted"}
    risk_counts_what_works_at_ib(desk)
    assert desk.risk_state().working_buy["AAPL"] == 4
    other = other_client_order(desk, "other-2", 3, 180.0)
    try:
        # a gap (IB Gateway's daily restart): the reconnect lists every client's orders again
        desk.sim.call("drop_connections", reason="daily restart")
        eventually(lambda: (st := desk.gateway.call(GetStatus(), timeout_s=3)).reconnects == 1
                   and st.connection == "READY", 30.0, message="the gateway reconnected and reconciled")
        assert external_refs(desk) == {"by-hand": "Submitted", "other-2": "Submitted"}
        risk_counts_what_works_at_ib(desk)
        assert desk.risk_state().working_buy["AAPL"] == 4 + 3
        kill_everything(desk)  # reqGlobalCancel reaches other clients' orders; IB's completed orders say so
    finally:
        other.disconnect()
