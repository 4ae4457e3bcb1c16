"""Order groups end to end (issue 16): the real gateway (ib_insync) against the TWS simulator, the real risk
governor and order manager as processes, a strategy through the SDK.

Brackets (take-profit fill cancels the stop-loss and the other way round, partial fills), a parent rejected by IB
taking its children with it, an OCA member rejected taking the group with it, a group refused by risk as a whole,
and the group's exposure counted once. IB's truth is the simulator's state (parentId, ocaGroup, statuses)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bus.messages import GroupView, Instrument, OrderSpec, OrderView
from sdk import OrderRejected
from tests.support.chain import ORDER_TIMEOUT_S, Chain, running_chain, spec
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(240)

SYMBOL = "AAPL"
#: the strategies the tests trade as (each its own key on the authenticated bus, and its own books)
STRATEGIES = ("br-tp", "br-sl", "br-part", "br-rej", "oca-rej", "oca-fill", "risk-all", "capped", "kill-keep",
              "kill-all", "restart", "trail", "types", "reducer", "resume", "margin-br")
#: stale data never (the manual clock ticks only when a test moves the market); IB's what-if for orders from 100k
#: notional, with a floor no order passes (every order here is far below it, but the margin test's)
RISK = """
stale_data_s = 3600
margin_check_notional = 100000
margin_floor = 1000000000
margin_wait_s = 3.0
"""
LIMITS = """
[risk.strategies.capped]
max_position = 10
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """One chain for the module: a manual-clock simulator (prices move only when a test moves them), the gateway,
    risk and the order manager."""
    from sim.testing import running_sim

    with running_sim(seed=16) as sim:
        with running_chain(tmp_path_factory.mktemp("groups"), sim, extra=LIMITS, risk=RISK,
                           actors=("gateway", "risk", "orders"), strategies=STRATEGIES) as chain:
            yield chain


def px(x: float) -> float:
    return round(x, 2)


def group_of(client: Any, group_id: str) -> GroupView:
    view = client.get_group(group_id)
    assert isinstance(view, GroupView)
    return view


def statuses(view: GroupView) -> list[str]:
    return [o.status for o in view.orders]


def group_when(client: Any, chain: Chain, group_id: str, pred: Any, what: str) -> GroupView:
    """The group's view once ``pred(view)`` holds."""

    def ready() -> GroupView | None:
        view = group_of(client, group_id)
        return view if pred(view) else None

    return eventually(ready, ORDER_TIMEOUT_S,
                      message=lambda: f"{what}; have {statuses(group_of(client, group_id))}\n{chain.logs()}")


def wait_statuses(client: Any, chain: Chain, group_id: str, want: list[str]) -> GroupView:
    return group_when(client, chain, group_id, lambda v: statuses(v) == want, f"statuses {want}")


def wait_finished(client: Any, chain: Chain, group_id: str) -> GroupView:
    return group_when(client, chain, group_id, lambda v: v.status != "working", "group finished")


def sim_of(chain: Chain, view: OrderView) -> dict:
    o = chain.sim_order(view.spec.order_ref)
    assert o is not None, f"{view.spec.order_ref} is not at the simulator"
    return o


def steps(view: OrderView) -> list[str]:
    out: list[str] = []
    for s in view.history:
        if not out or out[-1] != s.status:
            out.append(s.status)
    return out


def place_bracket(chain: Chain, client: Any, qty: float = 10) -> tuple[GroupView, float, float]:
    """A BUY bracket whose entry fills at once (a limit at the ask), take-profit 2 % up, stop-loss 2 % down; waits
    until the entry is filled and both children work at IB."""
    q = chain.quote(SYMBOL)
    mid = (q["bid"] + q["ask"]) / 2
    tp, sl = px(mid * 1.02), px(mid * 0.98)
    view = client.place_bracket_order(SYMBOL, "BUY", qty, px(q["ask"]), tp, sl)
    assert view.kind == "bracket" and view.status == "working", view
    wait_statuses(client, chain, view.group_id, ["Submitted", "PreSubmitted", "PreSubmitted"])
    chain.sim.set_price(SYMBOL, bid=q["bid"], ask=q["ask"])  # the manual clock matches when the market moves
    view = group_when(client, chain, view.group_id,
                      lambda v: v.orders[0].status == "Filled" and all(o.is_live for o in v.orders[1:]),
                      "entry filled, children working")
    return view, tp, sl


# -- brackets ---------------------------------------------------------------------------------------------------


def test_bracket_take_profit_fill_cancels_the_stop_loss(chain: Chain) -> None:
    client = chain.client("br-tp")
    view, tp, sl = place_bracket(chain, client)
    entry, take, stop = view.orders
    # IB's mechanics: the children name the entry as their parent, and only the last member transmitted
    assert sim_of(chain, take)["parentId"] == sim_of(chain, entry)["orderId"]
    assert sim_of(chain, stop)["parentId"] == sim_of(chain, entry)["orderId"]
    assert [o.spec.order_type for o in view.orders] == ["LMT", "LMT", "STP"]
    chain.sim.set_price(SYMBOL, bid=px(tp + 0.05), ask=px(tp + 0.07))
    done = wait_statuses(client, chain, view.group_id, ["Filled", "Filled", "Cancelled"])
    assert done.status == "done"
    assert done.orders[1].filled == 10 and done.orders[2].filled == 0
    assert sim_of(chain, stop)["status"] == "Cancelled"
    assert chain.position(SYMBOL) == 0
    # each member is an ordinary order too
    assert client.get_order(take.spec.client_order_id).status == "Filled"
    for o in done.orders:  # the status sequence end to end (shown with -s)
        full = client.get_order(o.spec.client_order_id)
        print(f"bracket {o.spec.order_type} {o.spec.side}{' child' if o.spec.parent_id else ' entry'}: "
              + " -> ".join(f"{h.status}{f' [{h.error_code}: {h.reason}]' if h.reason else ''}" for h in full.history))


def test_bracket_stop_loss_fill_cancels_the_take_profit(chain: Chain) -> None:
    client = chain.client("br-sl")
    view, tp, sl = place_bracket(chain, client)
    chain.sim.set_price(SYMBOL, bid=px(sl - 0.10), ask=px(sl - 0.08))
    done = wait_statuses(client, chain, view.group_id, ["Filled", "Cancelled", "Filled"])
    assert done.orders[2].filled == 10 and done.orders[1].filled == 0
    assert sim_of(chain, view.orders[1])["status"] == "Cancelled"
    assert chain.position(SYMBOL) == 0


def test_bracket_partial_entry_fill_protects_the_filled_part(chain: Chain) -> None:
    client = chain.client("br-part")
    q = chain.quote(SYMBOL)
    mid = (q["bid"] + q["ask"]) / 2
    entry_px, tp, sl = px(q["bid"] - 0.50), px(mid * 1.02), px(mid * 0.98)
    view = client.place_bracket_order(SYMBOL, "BUY", 10, entry_px, tp, sl)
    view = wait_statuses(client, chain, view.group_id, ["Submitted", "PreSubmitted", "PreSubmitted"])
    entry = view.orders[0]
    chain.sim.fill(entry.perm_id, quantity=4, price=entry_px)
    eventually(lambda: client.get_order(entry.spec.client_order_id).filled == 4, ORDER_TIMEOUT_S,
               message=chain.logs)
    # the children's quantities are IB's: the order manager's views say what IB says of each child
    def consistent() -> bool:
        views = group_of(client, view.group_id).orders[1:]
        sims = [sim_of(chain, o) for o in views]
        return all(v.spec.quantity == s["totalQuantity"] and v.remaining == s["remaining"]
                   for v, s in zip(views, sims, strict=True))

    eventually(consistent, ORDER_TIMEOUT_S, message=lambda: f"{[sim_of(chain, o) for o in view.orders[1:]]}")
    # the take-profit trades only what the entry filled: 4 of its 10
    chain.sim.set_price(SYMBOL, bid=px(tp + 0.05), ask=px(tp + 0.07))
    eventually(lambda: group_of(client, view.group_id).orders[1].filled == 4, ORDER_TIMEOUT_S, message=chain.logs)
    assert chain.position(SYMBOL) == 0
    after = group_of(client, view.group_id)
    assert after.orders[2].filled == 0
    # cancelling the group cancels the rest of the entry, and IB takes the children with it
    client.cancel_group(view.group_id, reason="done for today")
    final = wait_finished(client, chain, view.group_id)
    assert [o.filled for o in final.orders] == [4, 4, 0]
    for o in final.orders:
        sim = sim_of(chain, o)
        assert sim["filled"] == o.filled  # our quantities are IB's
    assert chain.position(SYMBOL) == 0


def test_bracket_parent_rejected_by_ib_cancels_its_children(chain: Chain) -> None:
    client = chain.client("br-rej")
    q = chain.quote(SYMBOL)
    chain.sim.reject_next_orders(1, code=201, reason="test: parent refused")
    view = client.place_bracket_order(SYMBOL, "BUY", 10, px(q["bid"] - 0.50), px(q["ask"] * 1.02),
                                      px(q["bid"] * 0.98))
    final = wait_finished(client, chain, view.group_id)
    assert final.status == "cancelled", final
    assert all(o.filled == 0 and o.is_done for o in final.orders)
    entry = client.get_order(final.orders[0].spec.client_order_id)
    assert 201 in [h.error_code for h in entry.history], entry.history  # IB's rejection, then Cancelled
    assert all(sim_of(chain, o)["status"] == "Cancelled" for o in final.orders)


# -- OCA --------------------------------------------------------------------------------------------------------


def oca_members(client: Any, chain: Chain, qty: tuple[float, float] = (5, 8)) -> list[OrderSpec]:
    q = chain.quote(SYMBOL)
    return [
        OrderSpec(strategy_id=client.strategy_id, client_order_id=f"{client.strategy_id}-{i}-{q['bid']:.0f}",
                  instrument=Instrument(symbol=SYMBOL), side="BUY",
                  quantity=n, order_type="LMT", limit_price=px(q["bid"] - 1.0 - i))
        for i, n in enumerate(qty)
    ]


def test_oca_member_rejected_by_ib_cancels_the_group(chain: Chain) -> None:
    client = chain.client("oca-rej")
    chain.sim.reject_next_orders(1, code=201, reason="test: first member refused")
    view = client.place_oca_group(oca_members(client, chain), oca_type=1)
    final = wait_finished(client, chain, view.group_id)
    assert statuses(final) == ["Cancelled", "Cancelled"], final
    entry = client.get_order(final.orders[0].spec.client_order_id)
    assert 201 in [h.error_code for h in entry.history], entry.history  # IB's rejection, then Cancelled
    assert sim_of(chain, final.orders[0])["ocaGroup"] == f"oca-rej/{view.group_id}"
    # the other member was cancelled by the gateway: before it left for IB, or at IB
    second = chain.sim_order(final.orders[1].spec.order_ref)
    assert second is None or second["status"] == "Cancelled", second
    assert "rejected" in final.orders[1].reason, final.orders[1].reason


def test_oca_fill_of_one_member_cancels_the_other(chain: Chain) -> None:
    client = chain.client("oca-fill")
    view = client.place_oca_group(oca_members(client, chain), oca_type=1)
    view = wait_statuses(client, chain, view.group_id, ["Submitted", "Submitted"])
    # a partial fill of one member cancels the other (ocaType 1); the member itself keeps working
    chain.sim.fill(view.orders[0].perm_id, quantity=2)
    after = wait_statuses(client, chain, view.group_id, ["Submitted", "Cancelled"])
    assert [o.filled for o in after.orders] == [2, 0]
    assert sim_of(chain, after.orders[1])["status"] == "Cancelled"
    client.cancel_group(view.group_id)
    final = wait_finished(client, chain, view.group_id)
    assert final.status == "done" and [o.filled for o in final.orders] == [2, 0]
    # leave no position behind for the other tests
    close = client.place_market_order(SYMBOL, "SELL", 2)
    client.wait_for_order(close.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
    chain.sim.set_price(SYMBOL, bid=chain.quote(SYMBOL)["bid"], ask=chain.quote(SYMBOL)["ask"])
    eventually(lambda: chain.position(SYMBOL) == 0, ORDER_TIMEOUT_S, message=chain.logs)


# -- risk: one unit, worst case ---------------------------------------------------------------------------------


def test_group_refused_by_risk_is_refused_as_a_whole(chain: Chain) -> None:
    client = chain.client("risk-all")
    q = chain.quote(SYMBOL)
    # the stop-loss is 20 % away: outside the price collar; the entry and take-profit alone would pass
    with pytest.raises(OrderRejected) as err:
        client.place_bracket_order(SYMBOL, "BUY", 10, px(q["bid"] - 0.5), px(q["ask"] * 1.01), px(q["bid"] * 0.8))
    group = err.value.group
    assert group is not None and group.status == "rejected"
    assert err.value.code == "risk.price_collar"
    assert statuses(group) == ["RiskRejected"] * 3
    assert all(chain.sim_order(o.spec.order_ref) is None for o in group.orders)  # nothing reached IB
    assert client.get_order(group.orders[0].spec.client_order_id).status == "RiskRejected"


def test_group_exposure_counts_its_worst_case_once(chain: Chain) -> None:
    """max_position 10 for this strategy: an OCA of 5 and 8 (largest 8) passes where 13 would not; a bracket of
    10 (entry + two children of 10) passes where three orders of 10 would not."""
    client = chain.client("capped")
    oca = client.place_oca_group(oca_members(client, chain, (5, 8)), oca_type=1)
    assert oca.status == "working"
    q = chain.quote(SYMBOL)
    # the group counts as its largest member (8): 2 more fit under 10, 3 do not
    with pytest.raises(OrderRejected) as err:
        client.place_limit_order(SYMBOL, "BUY", 3, px(q["bid"] - 0.7))
    assert err.value.code == "risk.max_position", err.value
    two = client.place_limit_order(SYMBOL, "BUY", 2, px(q["bid"] - 0.7))
    client.cancel_order(two.spec.client_order_id)
    client.cancel_group(oca.group_id)
    wait_finished(client, chain, oca.group_id)
    eventually(lambda: client.get_order(two.spec.client_order_id).is_done, ORDER_TIMEOUT_S, message=chain.logs)
    before = chain.risk_state()
    br = client.place_bracket_order(SYMBOL, "BUY", 10, px(q["bid"] - 0.5), px(q["ask"] * 1.02),
                                    px(q["bid"] * 0.98))
    assert br.status == "working"
    state = chain.risk_state()
    # the account book: the entry's 10 on the buy side, the children's 10 (not 20) on the sell side
    assert state.working_buy.get(SYMBOL, 0) - before.working_buy.get(SYMBOL, 0) == 10, state
    assert state.working_sell.get(SYMBOL, 0) - before.working_sell.get(SYMBOL, 0) == 10, state
    # one more buy would go beyond the limit: the bracket is counted, once
    with pytest.raises(OrderRejected) as err:
        client.place_limit_order(SYMBOL, "BUY", 1, px(q["bid"] - 0.5))
    assert err.value.code == "risk.max_position"
    client.cancel_group(br.group_id)
    wait_finished(client, chain, br.group_id)


# -- kill -------------------------------------------------------------------------------------------------------


def flatten(chain: Chain, client: Any) -> None:
    """Sell what the strategy holds (the bracket's entry) so the next test starts flat."""
    held = chain.position(SYMBOL)
    if held:
        close = client.place_market_order(SYMBOL, "SELL" if held > 0 else "BUY", abs(held))
        client.wait_for_order(close.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
        chain.sim.set_price(SYMBOL, bid=chain.quote(SYMBOL)["bid"], ask=chain.quote(SYMBOL)["ask"])
    eventually(lambda: chain.position(SYMBOL) == 0, ORDER_TIMEOUT_S, message=chain.logs)


@pytest.mark.parametrize("keep", [False, True], ids=["kill", "kill-keep-protective"])
def test_kill_cancels_everything_unless_told_to_keep_the_protective_stops(chain: Chain, keep: bool) -> None:
    """A kill cancels every working order, the bracket's stop-loss included; ``--keep-protective`` cancels the
    take-profit and a resting entry but keeps the stop-loss that protects the filled entry's position at IB."""
    from cli.kill import send_kill
    from cli.resume import send_resume

    client = chain.client(f"kill-{'keep' if keep else 'all'}")
    view, tp, sl = place_bracket(chain, client)
    entry, take, stop = view.orders
    q = chain.quote(SYMBOL)
    resting = client.place_limit_order(SYMBOL, "BUY", 3, px(q["bid"] - 1.0))
    eventually(lambda: chain.working_at_sim(resting.spec.order_ref), ORDER_TIMEOUT_S, message=chain.logs)
    try:
        outcome = send_kill(chain.cfg, reason="test: kill with brackets", keep_protective=keep)
        assert outcome.exit_code == 0, outcome.to_dict()
        assert not chain.working_at_sim(resting.spec.order_ref)
        assert not chain.working_at_sim(take.spec.order_ref)
        assert chain.working_at_sim(stop.spec.order_ref) is keep, chain.sim_order(stop.spec.order_ref)
        assert chain.position(SYMBOL) == 10  # the entry's fill stands
        want = ["Filled", "Cancelled", "Submitted" if keep else "Cancelled"]
        if keep:
            group_when(client, chain, view.group_id, lambda v: statuses(v)[:2] == want[:2] and v.orders[2].is_live,
                       "take-profit cancelled, stop-loss kept")
        else:
            wait_statuses(client, chain, view.group_id, want)
    finally:
        send_resume(chain.cfg, reason="test: resume after the kill")
        eventually(lambda: chain.risk_state().global_state == "ACTIVE", ORDER_TIMEOUT_S, message=chain.logs)
    if keep:
        client.cancel_group(view.group_id)
        wait_finished(client, chain, view.group_id)
    flatten(chain, client)


# -- restart ----------------------------------------------------------------------------------------------------


def restart(chain: Chain, name: str) -> None:
    from bus.messages import GetStatus
    from tests.support.processes import wait_serving

    proc = chain.procs[name]
    proc.start()
    wait_serving(chain.ctx, chain.cfg.bus.service_endpoint(name), proc, 45.0)
    if name == "orders":
        orders = chain.service("orders")
        eventually(lambda: orders.call(GetStatus()).detail.get("ready") == "true", 45.0, message=chain.logs)
    if name == "risk":
        eventually(lambda: chain.risk_state().ready, 45.0, message=chain.logs)
    if name == "gateway":
        eventually(lambda: chain.gateway.call(GetStatus()).connection == "READY", 45.0,  # type: ignore[attr-defined]
                   message=chain.logs)


def test_restart_mid_bracket_recovers_the_group_from_the_journal_and_ib(chain: Chain) -> None:
    """The order manager and the risk governor crash (SIGKILL) while a bracket's entry rests; IB fills 4 of its 10
    meanwhile. After the restart the order manager has the group (its journal) with IB's fills, and the governor
    counts the children (from IB's parentId) as one set: the largest, not the sum. The bracket still works."""
    client = chain.client("restart")
    q = chain.quote(SYMBOL)
    mid = (q["bid"] + q["ask"]) / 2
    entry_px, tp, sl = px(q["bid"] - 0.50), px(mid * 1.02), px(mid * 0.98)
    view = client.place_bracket_order(SYMBOL, "BUY", 10, entry_px, tp, sl)
    view = wait_statuses(client, chain, view.group_id, ["Submitted", "PreSubmitted", "PreSubmitted"])
    before = chain.risk_state()
    entry, take, stop = view.orders
    chain.procs["orders"].kill()
    chain.procs["risk"].kill()
    chain.sim.fill(entry.perm_id, quantity=4, price=entry_px)
    restart(chain, "risk")
    restart(chain, "orders")
    got = group_when(client, chain, view.group_id, lambda v: v.orders[0].filled == 4, "the entry's fill of 4")
    assert [o.spec.client_order_id for o in got.orders] == [o.spec.client_order_id for o in view.orders]
    assert got.kind == "bracket" and got.status == "working"
    assert [o.spec.parent_id for o in got.orders[1:]] == [entry.spec.client_order_id] * 2
    # the governor rebuilt its book from IB's open orders: the children are one set (parentId), counted once
    children = [sim_of(chain, o) for o in (take, stop)]
    assert all(c["parentId"] == sim_of(chain, entry)["orderId"] for c in children)
    assert before.working_sell.get(SYMBOL, 0) == 10  # nothing else works in AAPL: the children's set, once
    state = chain.risk_state()
    largest, total = max(c["remaining"] for c in children), sum(c["remaining"] for c in children)
    assert largest < total and state.working_sell.get(SYMBOL, 0) == pytest.approx(largest), (state, children)
    # the bracket still works after the restart: the take-profit trades the 4 the entry filled
    chain.sim.set_price(SYMBOL, bid=px(tp + 0.05), ask=px(tp + 0.07))
    group_when(client, chain, view.group_id, lambda v: v.orders[1].filled == 4, "take-profit filled 4")
    client.cancel_group(view.group_id)
    final = wait_finished(client, chain, view.group_id)
    assert [o.filled for o in final.orders] == [4, 4, 0]
    flatten(chain, client)


# -- order types ------------------------------------------------------------------------------------------------


def test_trailing_stop_reaches_ib_as_a_trail_order_and_keeps_its_terms(chain: Chain) -> None:
    client = chain.client("trail")
    view = client.place_trailing_stop(SYMBOL, "SELL", 1, trailing_amount=1.25)
    live = client.wait_for_order(view.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
    at_ib = sim_of(chain, live)
    assert (at_ib["orderType"], at_ib["auxPrice"], at_ib["tif"]) == ("TRAIL", 1.25, "GTC")
    assert at_ib["trailStopPrice"] == pytest.approx(chain.quote(SYMBOL)["bid"] - 1.25)
    pct = client.place_trailing_stop(SYMBOL, "SELL", 1, trailing_percent=2.0)
    pct_live = client.wait_for_order(pct.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
    assert sim_of(chain, pct_live)["trailingPercent"] == 2.0
    # IB's reported terms are the order's own: nothing it cannot express
    for v in (client.get_order(view.spec.client_order_id), client.get_order(pct.spec.client_order_id)):
        assert not [h.reason for h in v.history if "cannot be adopted" in h.reason], v.history
        assert v.spec.order_type == "TRAIL"
    client.cancel_all_orders()
    eventually(lambda: not client.get_orders("open"), ORDER_TIMEOUT_S, message=chain.logs)


def test_an_order_type_ib_does_not_list_for_the_contract_is_refused_before_ib(chain: Chain) -> None:
    client = chain.client("types")
    es = Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=551601503)
    with pytest.raises(OrderRejected) as err:
        client.place_order(OrderSpec(strategy_id="types", client_order_id="moc-es", instrument=es, side="BUY",
                                     quantity=1, order_type="MOC"))
    assert err.value.code == "risk.order_type" and "MOC" in err.value.reason
    assert chain.sim_order("types/moc-es") is None


# -- REDUCING ---------------------------------------------------------------------------------------------------


def test_reducing_admits_protective_groups_that_only_reduce_and_refuses_a_new_bracket(chain: Chain) -> None:
    """The strategy holds 10 and is REDUCING: an OCA of a take-profit and a stop-loss for those 10 passes (each
    only reduces), a new bracket (its entry opens) is refused as a whole, nothing of it reaching IB."""
    from bus.messages import Ack, SetTradingState

    client = chain.client("reducer")
    q = chain.quote(SYMBOL)
    opened = client.place_limit_order(SYMBOL, "BUY", 10, px(q["ask"]))
    client.wait_for_order(opened.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S)
    chain.sim.set_price(SYMBOL, bid=q["bid"], ask=q["ask"])
    eventually(lambda: client.get_order(opened.spec.client_order_id).status == "Filled", ORDER_TIMEOUT_S,
               message=chain.logs)
    eventually(lambda: chain.risk_state().positions.get(SYMBOL) == 10, ORDER_TIMEOUT_S, message=chain.logs)
    scope = "strategy:reducer"
    assert isinstance(chain.risk.call(SetTradingState(scope=scope, state="REDUCING", reason="test")), Ack)
    try:
        mid = (q["bid"] + q["ask"]) / 2
        protect = [
            OrderSpec(strategy_id="reducer", client_order_id="tp", instrument=Instrument(symbol=SYMBOL), side="SELL",
                      quantity=10, order_type="LMT", limit_price=px(mid * 1.02), tif="GTC"),
            OrderSpec(strategy_id="reducer", client_order_id="sl", instrument=Instrument(symbol=SYMBOL), side="SELL",
                      quantity=10, order_type="STP", stop_price=px(mid * 0.98), tif="GTC"),
        ]
        oca = client.place_oca_group(protect, oca_type=1)
        assert oca.status == "working", oca
        with pytest.raises(OrderRejected) as err:
            client.place_bracket_order(SYMBOL, "BUY", 5, px(q["bid"] - 0.5), px(mid * 1.02), px(mid * 0.98))
        assert err.value.code == "risk.reducing" and err.value.group is not None
        assert all(chain.sim_order(o.spec.order_ref) is None for o in err.value.group.orders)
        client.cancel_group(oca.group_id)
        wait_finished(client, chain, oca.group_id)
    finally:
        chain.risk.call(SetTradingState(scope=scope, state="ACTIVE", reason="test done"))
    flatten(chain, client)


def test_a_group_interrupted_before_ib_is_resumed_by_the_strategys_retry_once(chain: Chain) -> None:
    """The gateway stalls (SIGSTOP) while the order manager submits a bracket, then the order manager and the stalled
    gateway crash (the SubmitGroup dies unread with the gateway): after the restarts every member is interrupted
    (never at IB). The strategy retries the same group: it is resumed, checked and placed, one IB order per member."""
    import signal

    from sdk import KhazadClient
    from sdk.groups import bracket_group

    q = chain.quote(SYMBOL)
    mid = (q["bid"] + q["ask"]) / 2
    group = bracket_group("resume", Instrument(symbol=SYMBOL), "BUY", 10, px(q["bid"] - 0.5), px(mid * 1.02),
                          px(mid * 0.98))
    # risk knows the contract and its price before the gateway stalls (as it does once any order went through)
    chain.decided(lambda: spec(SYMBOL, "BUY", 1, strategy="resume", limit=px(q["bid"] - 5)))
    with KhazadClient("resume", config=chain.cfg, timeout_s=20.0) as client:
        gateway = chain.procs["gateway"]
        gateway.signal(signal.SIGSTOP)
        try:
            first = client.place_group(group)  # the gateway does not answer: the outcome is unknown
            assert first.status == "working" and {o.status for o in first.orders} == {"PendingSubmit"}, first
            chain.procs["orders"].kill()
        finally:
            gateway.kill()  # SIGKILL works on a stopped process: the unread SubmitGroup goes with it
        restart(chain, "gateway")
        restart(chain, "orders")
        group_when(client, chain, group.group_id,
                   lambda v: all("interrupted" in o.reason for o in v.orders), "every member interrupted")
        assert all(chain.sim_order(ref) is None for ref in group.refs), [chain.sim_order(r) for r in group.refs]
        # the governor's disconnect breaker (the gateway was away) lifts itself once the gateway is back
        eventually(lambda: chain.risk_state().global_state == "ACTIVE", 45.0, message=chain.logs)
        again = client.place_group(group)
        assert [o.spec.client_order_id for o in again.orders] == [o.client_order_id for o in group.orders]
        placed = wait_statuses(client, chain, group.group_id, ["Submitted", "PreSubmitted", "PreSubmitted"])
        assert all(sim_of(chain, o)["status"] in ("Submitted", "PreSubmitted") for o in placed.orders)
        perms = {o["permId"] for o in chain.sim.state()["orders"].values() if o["orderRef"] in group.refs}
        assert len(perms) == 3  # one IB order per member
        client.cancel_group(group.group_id)
        wait_finished(client, chain, group.group_id)


def test_a_bracket_whose_entry_ib_says_leaves_too_little_margin_is_refused_as_a_whole(chain: Chain) -> None:
    """IB's what-if previews the entry (1000 AAPL, ~190k: above the check's 100k): too little excess liquidity after
    it, so the bracket is refused, nothing at IB; a small bracket is not previewed and passes."""
    client = chain.client("margin-br")
    q = chain.quote(SYMBOL)
    mid = (q["bid"] + q["ask"]) / 2
    with pytest.raises(OrderRejected) as err:
        client.place_bracket_order(SYMBOL, "BUY", 1000, px(q["bid"] - 0.5), px(mid * 1.02), px(mid * 0.98))
    assert err.value.code == "risk.margin" and err.value.group is not None, err.value
    assert statuses(err.value.group) == ["RiskRejected"] * 3
    assert all(chain.sim_order(o.spec.order_ref) is None for o in err.value.group.orders)
    small = client.place_bracket_order(SYMBOL, "BUY", 10, px(q["bid"] - 0.5), px(mid * 1.02), px(mid * 0.98))
    assert small.status == "working"
    client.cancel_group(small.group_id)
    wait_finished(client, chain, small.group_id)
