"""Unit tests of the gateway's reading of IB's order notices (issue 12 items 1-3): for every code and every
context (a new order, a working one, one with an amendment or a cancel pending) the effect on the order's state
and what is published. The expected effects are written out here, literally (IB's meaning of each code, from
/work/shared/notes/ib-order-notices.md), and each is checked on the order's state, not on the module's table.

Also the library seam: an order's error never reaches the client library (which would mark the trade Cancelled),
and an amendment counts only once IB's openOrder reports its terms."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from actors.gateway.events import OrderEventTranslator
from actors.gateway.ib import terms_of
from actors.gateway.reports import OpenOrderReport, StatusReport
from actors.gateway.ordertable import GATEWAY, IbOrderRecord, IbOrderTable, terms_of_spec
from bus.messages import OrderNoticeEvent, OrderStatusEvent, OrderTerms
from tests.support.builders import order

CLIENT_ID = 7
ORDER_ID = 5
PERM_ID = 4242
OLD_LIMIT = 100.0
NEW_LIMIT = 101.0

#: IB's meaning of each code, per context (new order, working order, amendment pending, cancel pending). Every code
#: the issue names, and the ones the notes and the simulator add. Anything else must be "unknown".
EXPECTED: dict[int, tuple[str, str, str, str]] = {
    103: ("rejected", "unknown", "amend_rejected", "unknown"),
    104: ("unknown", "unknown", "amend_rejected", "unknown"),
    105: ("unknown", "unknown", "amend_rejected", "unknown"),
    110: ("rejected", "unknown", "amend_rejected", "unknown"),
    135: ("unknown", "unknown", "amend_rejected", "cancel_refused"),
    161: ("cancel_refused", "cancel_refused", "cancel_refused", "cancel_refused"),
    163: ("rejected", "unknown", "amend_rejected", "unknown"),
    200: ("rejected", "unknown", "amend_rejected", "unknown"),
    201: ("rejected", "unknown", "amend_rejected", "unknown"),
    202: ("info", "info", "info", "info"),
    327: ("unknown", "unknown", "unknown", "unknown"),  # not an order's notice at all: never final
    383: ("rejected", "unknown", "amend_rejected", "unknown"),
    387: ("rejected", "unknown", "amend_rejected", "unknown"),
    399: ("info", "info", "info", "info"),
    404: ("info", "info", "info", "info"),
    434: ("rejected", "unknown", "amend_rejected", "unknown"),
    439: ("rejected", "unknown", "amend_rejected", "unknown"),
    441: ("rejected", "unknown", "amend_rejected", "unknown"),
    451: ("rejected", "unknown", "amend_rejected", "unknown"),
    2109: ("info", "info", "info", "info"),
    2137: ("info", "info", "info", "info"),
    10006: ("rejected", "unknown", "amend_rejected", "unknown"),
    10089: ("info", "info", "info", "info"),
    10090: ("info", "info", "info", "info"),
    10147: ("unknown", "unknown", "unknown", "unknown"),
    10148: ("cancel_refused", "cancel_refused", "cancel_refused", "cancel_refused"),
    10149: ("rejected", "unknown", "amend_rejected", "cancel_refused"),
    10245: ("rejected", "unknown", "amend_rejected", "unknown"),
    10311: ("info", "info", "info", "info"),
    10349: ("info", "info", "info", "info"),
    99999: ("unknown", "unknown", "unknown", "unknown"),  # a code nobody has seen yet
}
CONTEXTS = ("new", "working", "amending", "cancelling")


class Outbox:
    """Records what the translator publishes."""

    def __init__(self) -> None:
        self.statuses: list[OrderStatusEvent] = []
        self.notices: list[OrderNoticeEvent] = []

    def maybe_order_status(self, ev: OrderStatusEvent | None) -> None:
        if ev is not None:
            self.statuses.append(ev)

    def order_notice(self, ev: OrderNoticeEvent) -> None:
        self.notices.append(ev)


class Harness:
    """One of our orders in a table, with a translator publishing into :class:`Outbox`."""

    def __init__(self) -> None:
        self.table = IbOrderTable()
        self.outbox = Outbox()
        self.resyncs: list[str] = []
        self.table.on_contradiction = self.resyncs.append
        self.spec = order(coid="n1", limit=OLD_LIMIT)
        self.translator = OrderEventTranslator(
            self.table, self.outbox, SimpleNamespace(state="READY"), client_id=CLIENT_ID,  # type: ignore[arg-type]
            apply_spec=self._apply_spec, resync=self.resyncs.append)
        self.rec: IbOrderRecord = self.table.add_placed(self.spec, ORDER_ID, CLIENT_ID)
        lib_order = SimpleNamespace(orderId=ORDER_ID, clientId=CLIENT_ID, permId=0, orderRef=self.spec.order_ref,
                                    action="BUY", totalQuantity=10.0, orderType="LMT", lmtPrice=OLD_LIMIT,
                                    auxPrice=1.7976931348623157e308, tif="DAY")
        self.trade: Any = SimpleNamespace(order=lib_order, contract=SimpleNamespace(symbol="AAPL"),
                                          orderStatus=SimpleNamespace(status="PendingSubmit"), advancedError="")
        self.rec.trade = self.trade
        self.table.observe(self.rec, status="PendingSubmit", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                           source=GATEWAY)

    def _apply_spec(self, lib_order: Any, spec: Any) -> None:
        lib_order.totalQuantity = spec.quantity
        lib_order.lmtPrice = spec.limit_price

    def ib_status(self, status: str, filled: float = 0.0) -> None:
        self.trade.order.permId = PERM_ID
        self.trade.orderStatus.status = status
        self.translator.on_status_report(self.trade, StatusReport(
            order_id=ORDER_ID, client_id=CLIENT_ID, perm_id=PERM_ID, status=status, filled=filled,
            remaining=10.0 - filled, avg_fill_price=0.0, last_fill_price=0.0))

    def ib_open_order(self, status: str, limit: float) -> None:
        self.trade.order.permId = PERM_ID
        self.trade.order.lmtPrice = limit
        self.translator.on_open_order_report(self.trade, OpenOrderReport(
            order_id=ORDER_ID, client_id=CLIENT_ID, perm_id=PERM_ID, order_ref=self.spec.order_ref, status=status,
            terms=OrderTerms(side="BUY", quantity=10.0, order_type="LMT", limit_price=limit, tif="DAY"),
            listed=False))

    def in_context(self, context: str) -> "Harness":
        if context == "new":
            return self
        self.ib_open_order("PreSubmitted", OLD_LIMIT)
        self.ib_status("Submitted")
        if context == "amending":  # what OrderEntry.amend leaves behind once the amendment has left
            amended = msgspec.structs.replace(self.spec, limit_price=NEW_LIMIT)
            self._apply_spec(self.trade.order, amended)
            self.rec.modify_pending, self.rec.amendment = True, amended
        elif context == "cancelling":  # what CancelSweeper.cancel_one leaves behind
            self.rec.cancel_pending, self.rec.cancel_cause = True, "strategy: test"
        self.outbox.statuses.clear()
        return self

    def notice(self, code: int, message: str = "IB says so") -> OrderNoticeEvent:
        self.translator.on_order_error(ORDER_ID, code, message)
        return self.outbox.notices[-1]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_notice_has_its_effect_on_the_order(code: int, context: str) -> None:
    h = Harness().in_context(context)
    before = h.rec.status
    expected = EXPECTED[code][CONTEXTS.index(context)]
    ev = h.notice(code, f"text of {code}")
    assert ev.effect == expected and ev.code == code and ev.order_ref == h.spec.order_ref
    assert ev.message == f"text of {code}"
    if expected == "rejected":
        # final, with IB's code and reason; the library's trade is done too (not listed as an open trade)
        [st] = h.outbox.statuses
        assert (st.status, st.is_done, st.error_code, st.reason) == ("Cancelled", True, code, f"text of {code}")
        assert h.rec.is_done and h.trade.orderStatus.status == "Cancelled" and ev.status == "Cancelled"
    else:
        # never final: the order keeps IB's status, nothing is published as a status change
        assert h.outbox.statuses == [] and h.rec.status == before and ev.status == before
        assert not h.rec.is_done and h.trade.orderStatus.status != "Cancelled"
    if context == "amending":
        if expected == "amend_rejected":  # the previous terms stand, also on the library's order
            assert not h.rec.modify_pending and h.rec.amendment is None and h.rec.spec == h.spec
            assert h.trade.order.lmtPrice == OLD_LIMIT
            assert ev.terms is not None and ev.terms.limit_price == OLD_LIMIT
        else:
            assert h.rec.modify_pending and h.rec.amendment is not None
    if context == "cancelling":
        assert h.rec.cancel_pending == (expected != "cancel_refused")
    assert bool(h.resyncs) == (expected == "unknown")


def test_a_warning_on_a_working_order_keeps_it_working_and_a_later_fill_ends_it_filled() -> None:
    h = Harness().in_context("working")
    for code in (10349, 2109, 399, 161, 10148, 404, 2137):
        h.notice(code)
    assert h.outbox.statuses == [] and h.rec.status == "Submitted"
    h.ib_status("Filled", filled=10.0)
    assert [e.status for e in h.outbox.statuses] == ["Filled"] and h.outbox.statuses[0].filled == 10.0


def test_a_refused_cancel_leaves_no_cause_for_ibs_own_cancel_later() -> None:
    h = Harness().in_context("cancelling")
    h.notice(161)
    h.ib_status("Cancelled")  # IB cancels it later, on its own
    h.notice(202, "Order Canceled - reason:price check")
    last = h.outbox.statuses[-1]
    assert (last.status, last.error_code, last.reason) == ("Cancelled", 202, "Order Canceled - reason:price check")


def test_our_cancel_carries_its_cause_and_ibs_202_does_not_replace_it() -> None:
    h = Harness().in_context("cancelling")
    h.ib_status("Cancelled")
    h.notice(202, "Order Canceled - reason:")
    [st] = h.outbox.statuses
    assert (st.status, st.reason, st.error_code) == ("Cancelled", "strategy: test", None)


def test_ibs_202_before_its_cancelled_status_is_the_cause() -> None:
    h = Harness().in_context("working")
    h.notice(202, "Order Canceled - reason:In accordance with our regulatory obligations")
    assert h.outbox.statuses == []
    h.ib_status("Cancelled")
    [st] = h.outbox.statuses
    assert (st.status, st.error_code) == ("Cancelled", 202) and "regulatory" in st.reason


def test_an_amendment_counts_when_ib_reports_its_terms_and_is_cleared_on_a_presubmitted_order() -> None:
    h = Harness()
    h.ib_open_order("PreSubmitted", OLD_LIMIT)
    h.ib_status("PreSubmitted")
    amended = msgspec.structs.replace(h.spec, limit_price=NEW_LIMIT)
    h._apply_spec(h.trade.order, amended)
    h.rec.modify_pending, h.rec.amendment = True, amended
    h.outbox.statuses.clear()
    h.ib_status("PreSubmitted")  # an echo of the status alone confirms nothing
    assert h.rec.modify_pending and h.rec.spec == h.spec
    h.ib_open_order("PreSubmitted", NEW_LIMIT)  # IB's openOrder with the new terms
    assert not h.rec.modify_pending and h.rec.amendment is None and h.rec.spec == amended
    [st] = h.outbox.statuses
    assert st.status == "PreSubmitted" and st.terms is not None and st.terms.limit_price == NEW_LIMIT
    # a genuine cancel afterwards is a cancel, never "amendment rejected"
    h.rec.cancel_pending, h.rec.cancel_cause = True, "strategy: done"
    h.ib_status("Cancelled")
    assert (h.outbox.statuses[-1].status, h.outbox.statuses[-1].reason) == ("Cancelled", "strategy: done")


def test_a_done_record_does_not_swallow_ibs_live_report() -> None:
    # a final status the gateway decided itself (a rejection): IB's live report replaces it, and IB is asked again
    h = Harness()
    h.notice(201, "Order rejected - reason: test")
    assert h.rec.is_done
    h.ib_status("Submitted")
    st = h.outbox.statuses[-1]
    assert (st.status, st.correction, h.rec.is_done) == ("Submitted", True, False) and h.resyncs
    # a final status IB itself gave: a contradicting live report is not published, but IB is asked again
    h2 = Harness().in_context("working")
    h2.ib_status("Cancelled")
    h2.ib_status("Submitted")
    assert [e.status for e in h2.outbox.statuses] == ["Cancelled"] and h2.resyncs


@pytest.mark.parametrize("library", ["ib_insync", "ib_async"])
def test_the_client_library_never_sees_an_orders_error(library: str) -> None:
    """The library marks a trade Cancelled (ib_insync) or ValidationError (ib_async) for an order's error; the
    session takes the error away from it and hands it to the gateway."""
    from actors.gateway.ib import IbSession

    session = IbSession(library, pacing_per_s=45)
    got: list[tuple[int, int, str, str]] = []
    session.on_order_error = lambda *a: got.append(a)
    wrapper = session.ib.wrapper
    wrapper.clientId = CLIENT_ID
    lib = session.lib
    trade = lib.Trade(contract=lib.Stock("AAPL", "SMART", "USD"),
                      order=lib.LimitOrder("BUY", 10, OLD_LIMIT, orderId=ORDER_ID, clientId=CLIENT_ID),
                      orderStatus=lib.OrderStatus(orderId=ORDER_ID, status="Submitted"))
    wrapper.trades[(CLIENT_ID, ORDER_ID)] = trade
    cancelled: list[Any] = []
    session.ib.orderStatusEvent += cancelled.append
    for code in (10349, 161, 201, 399):
        wrapper.error(ORDER_ID, code, f"text {code}", '{"reason": "x"}' if code == 201 else "")
    assert trade.orderStatus.status == "Submitted" and cancelled == []
    assert [(c, m) for _, c, m, _ in got] == [(10349, "text 10349"), (161, "text 161"), (201, "text 201"),
                                              (399, "text 399")]
    assert got[2][3] == '{"reason": "x"}'
    assert terms_of(trade.order) == OrderTerms(side="BUY", quantity=10.0, order_type="LMT", limit_price=OLD_LIMIT,
                                               stop_price=None, tif="")


def test_terms_of_a_spec_match_what_ib_echoes() -> None:
    spec = order(coid="t", limit=OLD_LIMIT)
    assert terms_of_spec(spec) == OrderTerms(side="BUY", quantity=10.0, order_type="LMT", limit_price=OLD_LIMIT,
                                             tif="DAY")


def test_docs_gateway_md_holds_the_notice_table() -> None:
    """docs/gateway.md states the table operators read: it must say what the code does."""
    from pathlib import Path

    from actors.gateway.notices import NOTICES

    rows: dict[int, tuple[str, ...]] = {}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] and cells[0][0].isdigit():
            for code in cells[0].split(","):
                rows[int(code)] = tuple(cells[2:])
    assert set(rows) == set(NOTICES)
    for code, rule in NOTICES.items():
        assert rows[code] == (rule.new, rule.working, rule.amending, rule.cancelling), code
