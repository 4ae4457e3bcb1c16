"""Unit tests of issue 16's pieces, one class each: the order terms of the new types (bus/messages.py), the shape of
an order group, the risk check against IB's orderTypes, the gateway's mapping to ib_insync's Order, the exposure
book's one-cancels-all sets, the group summary and ``khazad orders``' group column. The processes end to end are
in tests/system/test_system_groups.py."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from actors.risk import codes
from actors.risk.checks import RiskView, evaluate
from actors.risk.daybook import StrategyDayBook
from actors.risk.exposure import ExposureBook
from bus.config import RiskLimits
from bus.sessions import PnLReset
from bus.messages import (
    ContractInfo,
    Instrument,
    OrderGroup,
    OrderSpec,
    OrderView,
    ib_order_tokens,
)
from sdk.groups import bracket_group, oca_group, trailing_stop_spec

AAPL = Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL")


def spec(**kw: Any) -> OrderSpec:
    base: dict[str, Any] = dict(strategy_id="s", client_order_id="c1", instrument=AAPL, side="SELL", quantity=10)
    return msgspec.convert({**base, **kw}, OrderSpec)


# -- order terms ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("terms", [
    dict(order_type="TRAIL", trailing_amount=1.5),
    dict(order_type="TRAIL", trailing_percent=2.0, trail_stop_price=95.0),
    dict(order_type="TRAIL LIMIT", trailing_amount=1.0, limit_offset=0.1),
    dict(order_type="MOC"),
    dict(order_type="LOC", limit_price=99.0),
    dict(order_type="MIT", stop_price=101.0),
    dict(order_type="LIT", stop_price=101.0, limit_price=100.5),
    dict(order_type="LMT", limit_price=100.0, tif="OPG"),
    dict(order_type="LMT", limit_price=100.0, tif="GTD", good_till="20261207 16:00:00 US/Eastern"),
    dict(order_type="MKT", adaptive_priority="Patient"),
    dict(order_type="LMT", limit_price=100.0, adaptive_priority="Urgent", outside_rth=True),
])
def test_new_order_types_with_their_terms_are_valid_orders(terms: dict[str, Any]) -> None:
    assert spec(**terms).order_type == terms["order_type"]


@pytest.mark.parametrize("terms, why", [
    (dict(order_type="TRAIL"), "exactly one of trailing_amount and trailing_percent"),
    (dict(order_type="TRAIL", trailing_amount=1.0, trailing_percent=2.0), "exactly one"),
    (dict(order_type="TRAIL", trailing_amount=1.0, stop_price=99.0), "must not carry stop_price"),
    (dict(order_type="TRAIL LIMIT", trailing_amount=1.0), "limit_offset"),
    (dict(order_type="LMT", limit_price=1.0, trailing_amount=1.0), "must not carry trailing_amount"),
    (dict(order_type="LOC"), "needs limit_price"),
    (dict(order_type="MIT"), "needs stop_price"),
    (dict(order_type="MOC", tif="GTC"), "DAY orders"),
    (dict(order_type="STP", stop_price=99.0, tif="OPG"), "OPG takes MKT or LMT"),
    (dict(order_type="LMT", limit_price=1.0, tif="GTD"), "good_till"),
    (dict(order_type="LMT", limit_price=1.0, good_till="20261207 16:00:00"), "good_till"),
    (dict(order_type="STP", stop_price=99.0, adaptive_priority="Normal"), "Adaptive works MKT and LMT"),
    (dict(order_type="MKT", parent_id="p"), "belong to members of an order group"),
])
def test_order_terms_that_do_not_go_together_are_refused_naming_why(terms: dict[str, Any], why: str) -> None:
    with pytest.raises((ValueError, msgspec.ValidationError), match=why):
        spec(**terms)


def test_a_bad_spec_from_the_wire_is_a_decode_error_not_an_order() -> None:
    raw = msgspec.msgpack.encode(dict(strategy_id="s", client_order_id="c", instrument=msgspec.to_builtins(AAPL),
                                      side="SELL", quantity=1, order_type="TRAIL"))
    with pytest.raises(msgspec.ValidationError, match="trailing_amount"):
        msgspec.msgpack.decode(raw, type=OrderSpec)


# -- group shape ------------------------------------------------------------------------------------------------


def test_bracket_builder_links_children_to_the_entry_on_the_other_side() -> None:
    g = bracket_group("s", AAPL, "buy", 10, 100.0, 110.0, 90.0)
    entry, tp, sl = g.orders
    assert (entry.order_type, tp.order_type, sl.order_type) == ("LMT", "LMT", "STP")
    assert tp.parent_id == sl.parent_id == entry.client_order_id and not entry.parent_id
    assert {tp.side, sl.side} == {"SELL"} and entry.side == "BUY"
    assert {o.group_id for o in g.orders} == {g.group_id} and (tp.tif, sl.tif) == ("GTC", "GTC")
    assert g.key == f"s/{g.group_id}"


@pytest.mark.parametrize("change, why", [
    (lambda g: [g.orders[0], replace_spec(g.orders[1], side="BUY"), g.orders[2]], "closes the entry"),
    (lambda g: [g.orders[0], replace_spec(g.orders[1], quantity=5), g.orders[2]], "entry's quantity"),
    (lambda g: [g.orders[0], replace_spec(g.orders[1], parent_id="other"), g.orders[2]], "parent_id"),
    (lambda g: [g.orders[0], replace_spec(g.orders[1], group_id="other"), g.orders[2]], "group_id"),
    (lambda g: [g.orders[0], replace_spec(g.orders[1], strategy_id="t"), g.orders[2]], "belongs to strategy"),
    (lambda g: [g.orders[0], g.orders[1], g.orders[1]], "repeat"),
])
def test_a_malformed_bracket_is_refused(change: Any, why: str) -> None:
    g = bracket_group("s", AAPL, "BUY", 10, 100.0, 110.0, 90.0)
    with pytest.raises(ValueError, match=why):
        OrderGroup(strategy_id="s", group_id=g.group_id, kind="bracket", orders=change(g))


def replace_spec(o: OrderSpec, **kw: Any) -> OrderSpec:
    return msgspec.structs.replace(o, **kw)


def test_oca_builder_marks_every_member_and_a_member_without_it_is_refused() -> None:
    members = [spec(client_order_id=f"m{i}", order_type="LMT", limit_price=100.0 + i) for i in range(3)]
    g = oca_group("s", members, oca_type=2)
    assert {(o.oca_type, o.group_id) for o in g.orders} == {(2, g.group_id)}
    with pytest.raises(ValueError, match="oca_type"):
        OrderGroup(strategy_id="s", group_id=g.group_id, kind="oca", oca_type=2,
                   orders=[g.orders[0], replace_spec(g.orders[1], oca_type=1)])


# -- risk: IB's orderTypes --------------------------------------------------------------------------------------

FUT_TYPES = "ALGO,DAY,GTC,GTD,IOC,LIT,LMT,MIT,MKT,OCA,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT"
ES = ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=551601503,
                                        last_trade_date="20270319", local_symbol="ESH7"),
                  multiplier=50.0, min_tick=0.25, order_types=FUT_TYPES)
LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=1e9, price_collar_pct=50, max_position=2000,
                    max_gross_exposure=1e12, max_orders_per_second=5, duplicate_window_s=0)
VIEW = RiskView(ref_price=5000.0, tick_age_s=0.1, buying_power=1e12, contract=ES, fx_rate=1.0)


def es(**kw: Any) -> OrderSpec:
    return spec(instrument=ES.instrument, **kw)


def test_ib_order_tokens_name_the_type_tif_algo_and_oca_as_contract_details_do() -> None:
    assert ib_order_tokens(es(order_type="TRAIL LIMIT", trailing_amount=1.0, limit_offset=0.5)) == ["TRAILLMT"]
    assert ib_order_tokens(es(order_type="LMT", limit_price=1.0, tif="GTD", good_till="20261207 16:00:00",
                              adaptive_priority="Normal")) == ["LMT", "GTD", "ALGO"]


@pytest.mark.parametrize("terms", [dict(order_type="MOC"), dict(order_type="LMT", limit_price=5000.0, tif="OPG")])
def test_an_order_type_or_tif_the_contract_does_not_list_is_refused(terms: dict[str, Any]) -> None:
    v = evaluate(es(**terms), VIEW, LIMITS, LIMITS)
    assert v.code == codes.ORDER_TYPE and "ESH7 does not take" in v.reason


@pytest.mark.parametrize("terms", [
    dict(order_type="TRAIL", trailing_percent=1.0),
    dict(order_type="MIT", stop_price=5000.0),
    dict(order_type="LMT", limit_price=5000.0, tif="GTD", good_till="20261207 16:00:00"),
])
def test_an_order_type_the_contract_lists_passes(terms: dict[str, Any]) -> None:
    assert evaluate(es(**terms), VIEW, LIMITS, LIMITS).code == codes.APPROVED
    # and without IB's list nothing is refused for it
    unlisted = msgspec.structs.replace(ES, order_types="")
    assert evaluate(es(**terms), replace(VIEW, contract=unlisted), LIMITS, LIMITS).approved


# -- gateway: ib_insync's Order ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session() -> Any:
    from actors.gateway.ib import IbSession

    return IbSession("ib_insync", pacing_per_s=50, on_execution=lambda *a: None, on_commission=lambda *a: None,
                     on_sent=lambda *a: None)


def test_trailing_adaptive_and_gtd_terms_reach_the_library_order(session: Any) -> None:
    o = session.make_order(spec(order_type="TRAIL LIMIT", trailing_amount=1.25, trail_stop_price=95.0,
                                limit_offset=0.1, tif="GTD", good_till="20261207 16:00:00 US/Eastern"),
                           "DU1", limit=None, stop=None)
    assert (o.orderType, o.auxPrice, o.trailStopPrice, o.lmtPriceOffset) == ("TRAIL LIMIT", 1.25, 95.0, 0.1)
    assert (o.tif, o.goodTillDate) == ("GTD", "20261207 16:00:00 US/Eastern")
    p = session.make_order(spec(order_type="TRAIL", trailing_percent=2.5), "DU1", limit=None, stop=None)
    assert p.trailingPercent == 2.5 and p.auxPrice == session.unset_double
    a = session.make_order(spec(order_type="MKT", adaptive_priority="Patient"), "DU1", limit=None, stop=None)
    assert a.algoStrategy == "Adaptive" and [(t.tag, t.value) for t in a.algoParams] == [("adaptivePriority",
                                                                                         "Patient")]
    # an amendment that drops the algo clears it
    session.apply_spec(a, spec(order_type="MKT"), limit=None, stop=None)
    assert a.algoStrategy == "" and a.algoParams == []


# -- risk: one-cancels-all sets in the exposure book --------------------------------------------------------------


def test_an_oca_set_counts_its_largest_member_and_the_next_largest_when_it_goes(tmp_path: Any) -> None:
    info = ContractInfo(instrument=AAPL, min_tick=0.01)
    book = ExposureBook(StrategyDayBook(PnLReset("17:00 US/Eastern"), lambda c: info), lambda c: info)
    members = [spec(client_order_id=f"m{q}", side="BUY", quantity=q, order_type="LMT", limit_price=100.0)
               for q in (5, 8, 3)]
    for m in members:
        book.add_pending(m, info, price=100.0, expires_mono=math.inf, oca="s/g")
    assert book.working_qty(AAPL.con_id) == (8, 0)
    assert book.working_notional(_Valuer(), None) == pytest.approx(800.0)
    book.expire_pending(math.inf)  # every approval gone: nothing counts
    assert book.working_qty(AAPL.con_id) == (0, 0)


def test_bracket_children_count_once_and_add_no_notional(tmp_path: Any) -> None:
    info = ContractInfo(instrument=AAPL, min_tick=0.01)
    book = ExposureBook(StrategyDayBook(PnLReset("17:00 US/Eastern"), lambda c: info), lambda c: info)
    g = bracket_group("s", AAPL, "BUY", 10, 100.0, 110.0, 90.0)
    entry, tp, sl = g.orders
    book.add_pending(entry, info, price=100.0, expires_mono=math.inf)
    for child, price in ((tp, 110.0), (sl, 90.0)):
        book.add_pending(child, info, price=price, expires_mono=math.inf, oca=f"bracket:{entry.order_ref}",
                         child=True)
    assert book.working_qty(AAPL.con_id) == (10, 10)
    assert book.working_notional(_Valuer(), None) == pytest.approx(1000.0)


class _Valuer:
    def price(self, con_id: int) -> float | None:
        return 100.0

    def rate(self, currency: str) -> float | None:
        return 1.0


# -- the group's summary and `khazad orders` -----------------------------------------------------------------------


def view(o: OrderSpec, status: str, filled: float = 0.0) -> OrderView:
    done = status in ("Filled", "Cancelled", "RiskRejected", "GatewayRejected")
    return OrderView(spec=o, status=status, filled=filled, is_done=done, is_live=status == "Submitted")


def test_khazad_orders_shows_each_group_together_with_its_members_roles() -> None:
    from rich.console import Console

    from cli.orders import grouped, orders_table

    g = bracket_group("s", AAPL, "BUY", 10, 100.0, 110.0, 90.0)
    lone = spec(client_order_id="lone", order_type="MKT")
    views = [view(g.orders[0], "Filled", 10), view(lone, "Submitted"), view(g.orders[1], "Submitted"),
             view(g.orders[2], "PreSubmitted")]
    assert [v.spec.client_order_id for v in grouped(views)] == [g.orders[0].client_order_id,
                                                                 g.orders[1].client_order_id,
                                                                 g.orders[2].client_order_id, "lone"]
    console = Console(width=400, record=True)
    console.print(orders_table(views, "orders"))
    text = console.export_text()
    assert f"{g.group_id} entry" in text and text.count(f"{g.group_id} child") == 2


def test_group_status_says_rejected_working_done_or_cancelled() -> None:
    from actors.orders.groups import group_status
    from actors.orders.lifecycle import ManagedOrder

    def rec(status: str, filled: float = 0.0) -> ManagedOrder:
        m = ManagedOrder(spec=trailing_stop_spec("s", AAPL, "SELL", 1, trailing_amount=1.0))
        m.status, m.status_filled = status, filled
        return m

    assert group_status([rec("RiskRejected"), rec("RiskRejected")]) == "rejected"
    assert group_status([rec("Filled", 1), rec("Submitted")]) == "working"
    assert group_status([rec("Filled", 1), rec("Cancelled")]) == "done"
    assert group_status([rec("Cancelled"), rec("Cancelled")]) == "cancelled"


# -- gateway: a group from IB's own links (after a gateway restart) -------------------------------------------------


def test_the_gateway_finds_a_group_from_ibs_links_when_it_did_not_place_it_this_run() -> None:
    from types import SimpleNamespace

    from actors.gateway.groups import GroupEntry
    from actors.gateway.ordertable import IbOrderRecord, IbOrderTable

    table = IbOrderTable()

    def add(ref: str, order_id: int, *, parent: int = 0, oca: str = "", client: int = 9) -> None:
        rec = IbOrderRecord(order_ref=ref, strategy_id="s", client_order_id=ref.split("/")[1], symbol="AAPL",
                            ib_order_id=order_id, client_id=client)
        rec.trade = SimpleNamespace(order=SimpleNamespace(parentId=parent, ocaGroup=oca))  # type: ignore[assignment]
        table._index(rec)

    add("s/entry", 10)
    add("s/tp", 11, parent=10)
    add("s/sl", 12, parent=10)
    add("s/lone", 13)
    add("s/a", 14, oca="s/g")
    add("s/b", 15, oca="s/g")
    add("x/other-client", 11, parent=10, client=3)
    groups = GroupEntry(SimpleNamespace(table=table), sweeper=None)  # type: ignore[arg-type]
    assert sorted(groups.linked_at_ib("s/sl")) == ["s/entry", "s/sl", "s/tp"]
    assert sorted(groups.linked_at_ib("s/entry")) == ["s/entry", "s/sl", "s/tp"]
    assert sorted(groups.linked_at_ib("s/b")) == ["s/a", "s/b"]
    assert groups.linked_at_ib("s/lone") == ()


def test_khazad_kill_keep_protective_is_a_flag_of_the_kill() -> None:
    from cli.main import build_parser

    keep = build_parser().parse_args(["kill", "--reason", "stop", "--keep-protective"])
    plain = build_parser().parse_args(["kill", "--reason", "stop"])
    assert keep.keep_protective is True and plain.keep_protective is False


def test_contract_info_keeps_the_order_types_khazad_checks_within_its_bound() -> None:
    from bus.messages import checked_order_types, oca_key

    ib = ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,"
          "GTT,HID,IOC,LIT,LMT,LOC,MIT,MKT,MOC,MTL,NONALGO,OCA,OPG,PAON,POSTONLY,RELSTK,SCALE,SCALERST,STP,STPLMT,"
          "TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF")
    kept = checked_order_types(ib)
    assert kept == "ALGO,GTD,LIT,LMT,LOC,MIT,MKT,MOC,OCA,OPG,STP,STPLMT,TRAIL,TRAILLMT"
    ContractInfo(instrument=AAPL, order_types=kept)  # within the field's bound
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ContractInfo(instrument=AAPL, order_types=kept)),
                                  type=ContractInfo).order_types == kept
    assert oca_key("s/g") == oca_key("s/g") != oca_key("s/h") and oca_key("") == 0
