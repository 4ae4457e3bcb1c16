"""The chaos suite's invariants, checked against the simulator's ground truth (its control API ``state``).

:func:`gather` takes one consistent look at everything (the simulator before and after the others, retried until
the simulator did not change in between), then each ``check_*`` function returns a list of violations (empty =
holds), each a sentence naming the orderRef/execId involved:

1. :func:`check_acknowledged_orders_at_ib_once` - every order a strategy got an acknowledgement for exists at IB
   exactly once (by orderRef), unless the journal shows it ended before it was transmitted (a cancel or a kill
   that caught it in the gateway's pacing queue: then it is not at IB at all), with the terms of its last
   acknowledged modification (unless that modification reached IB only after the order's cancel:
   :func:`amendments_after_cancel`); no orderRef twice at IB; an order the strategy was told was refused is not
   at IB;
2. :func:`check_order_states_agree` - the order manager's journal and IB agree on every order (permId, done or
   working, filled quantity); an order missing at IB is one the journal says never reached it;
3. :func:`check_fills_journalled_once` - every execution at IB is in the order manager's journal exactly once
   (by exec_key) with its orderRef and quantity, and the journal has no execution IB does not;
4. :func:`check_fills_in_portfolio_once` - each strategy's books at the portfolio equal the sum of its executions
   at IB (a fill lost or counted twice shows as a wrong position);
5. :func:`check_positions_agree` - positions at IB == the gateway's snapshot == the portfolio's;
6. :func:`check_no_order_without_approval` - every order at IB is one the order manager journalled, and every
   placeOrder IB received (new or modification) is covered by an approved risk decision, both in the order
   manager's journal and in the risk governor's own log;
7. :func:`check_halt_in_force` - (halt variants) the gateway, the risk governor and the monitor all report
   HALTED, nothing reached IB after the kill was confirmed, and nothing is working at IB.

The journal is read with a read-only SQLite connection (``mode=ro``); nothing here writes anywhere.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bus import registry
from bus.messages import (
    GatewaySnapshot, GatewayStatus, GetPositions, GetRiskState, GetSnapshot, GetStatus, OrderSpec, PositionsReply,
    RiskStateReply, parse_order_ref,
)
from tests.support.system import System

#: Quantities and prices equal within this (IB reports floats).
EPS = 1e-6
#: IB statuses after which an order can no longer fill (the simulator reports rejections as Inactive).
SIM_DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
#: What the order manager answers for an order it refused before IB.
REFUSED = frozenset({"RiskRejected", "GatewayRejected"})
#: Journal statuses of orders closed by Khazad itself before reaching IB.
CLOSED_BEFORE_IB = frozenset({"RiskRejected", "GatewayRejected", "Cancelled"})
#: The reason the order manager gives when it does not know whether the gateway placed an order.
UNKNOWN_OUTCOME = "submission outcome unknown"
#: One line of the risk governor's log per approval (``risk: APPROVED order <ref> ...``).
RISK_APPROVED_RE = re.compile(r"risk: APPROVED (?:order|modify) (\S+) ")


@dataclass
class Truth:
    """Everything the invariants look at, gathered while the simulator stood still."""

    sim: dict[str, Any]
    journal_orders: dict[str, dict[str, Any]]
    journal_fills: dict[str, dict[str, Any]]
    journal_fill_rows: int
    approvals: Counter[str]
    risk_log_approvals: Counter[str]
    gateway_positions: dict[str, float]
    portfolio_positions: dict[str, float]
    strategy_books: dict[str, dict[str, float]]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sim_orders(self) -> list[dict[str, Any]]:
        return list(self.sim["orders"].values())

    @property
    def sim_executions(self) -> list[dict[str, Any]]:
        return [e for e in self.sim["executions"] if not e.get("supersededBy")]


def exec_key(exec_id: str) -> str:
    """IB's execId without its correction suffix (``...01.01`` -> ``...01``), as the gateway keys fills."""
    return exec_id.rsplit(".", 1)[0]


def _sim_signature(sim: dict[str, Any]) -> tuple:
    orders = tuple(sorted((o["permId"], o["status"], o["filled"], o["lmtPrice"], o["totalQuantity"])
                          for o in sim["orders"].values()))
    execs = tuple(sorted(e["execId"] for e in sim["executions"]))
    positions = tuple(sorted((p["symbol"], p["position"]) for p in sim["positions"]))
    return orders, execs, positions


def read_journal(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int, Counter[str]]:
    """The order manager's journal, read-only: orders by orderRef, fills by exec_key, the number of fill rows,
    and the number of approved risk decisions per orderRef."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        con.row_factory = sqlite3.Row
        orders: dict[str, dict[str, Any]] = {}
        for row in con.execute("SELECT order_ref, strategy_id, client_order_id, symbol, spec, status, stage, done, "
                               "filled, perm_id, ib_order_id, reason FROM orders"):
            d = dict(row)
            d["spec"] = msgspec.msgpack.decode(row["spec"], type=OrderSpec)
            orders[d["order_ref"]] = d
        fills: dict[str, dict[str, Any]] = {}
        rows = 0
        for row in con.execute("SELECT exec_key, exec_id, order_ref, symbol, side, quantity, price FROM fills"):
            rows += 1
            fills[row["exec_key"]] = dict(row)
        approvals: Counter[str] = Counter()
        for row in con.execute("SELECT order_ref, payload FROM events WHERE kind = 'risk_decision'"):
            decision = msgspec.msgpack.decode(row["payload"]) if row["payload"] else None
            if isinstance(decision, dict) and decision.get("approved") is True and decision.get("approval"):
                approvals[row["order_ref"]] += 1
        return orders, fills, rows, approvals
    finally:
        con.close()


def risk_log_approvals(text: str) -> Counter[str]:
    return Counter(m.group(1) for m in RISK_APPROVED_RE.finditer(text))


def _positions(items: Iterable[Any]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in items:
        out[p.instrument.symbol] += p.quantity
    return {s: q for s, q in out.items() if abs(q) > EPS}


def gather(system: System, records: list[dict[str, Any]], timeout_s: float = 3.0) -> Truth | None:
    """One consistent look at the system, or None when the simulator changed meanwhile (call again)."""
    before = system.sim()
    orders, fills, fill_rows, approvals = read_journal(system.cfg.path(system.cfg.orders.journal))
    snap = system.call("gateway", GetSnapshot(), timeout_s=timeout_s)
    if not isinstance(snap, GatewaySnapshot):
        return None
    port = system.call("portfolio", GetPositions(), timeout_s=timeout_s)
    if not isinstance(port, PositionsReply):
        return None
    strategies = {parse_order_ref(e["orderRef"])[0] for e in before["executions"] if parse_order_ref(e["orderRef"])}
    books: dict[str, dict[str, float]] = {}
    for sid in sorted(strategies):
        reply = system.call("portfolio", GetPositions(strategy_id=sid), timeout_s=timeout_s)
        if not isinstance(reply, PositionsReply):
            return None
        books[sid] = _positions(reply.positions)
    after = system.sim()
    if _sim_signature(before) != _sim_signature(after):
        return None
    return Truth(sim=after, journal_orders=orders, journal_fills=fills, journal_fill_rows=fill_rows,
                 approvals=approvals, risk_log_approvals=risk_log_approvals(system.log("risk")),
                 gateway_positions=_positions(snap.positions), portfolio_positions=_positions(port.positions),
                 strategy_books=books, records=records)


# ---------------------------------------------------------------------------------------------------------------
# the invariants
# ---------------------------------------------------------------------------------------------------------------


def _by_ref(records: list[dict[str, Any]], op: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("op") == op and r.get("ref"):
            out[r["ref"]].append(r)
    return out


def _closed_before_ib(j: dict[str, Any] | None) -> bool:
    """The journal says the order ended before IB ever had it (e.g. cancelled while still in the gateway's pacing
    queue): no permId, no fill, a status Khazad gives orders it closed itself."""
    return j is not None and j["status"] in CLOSED_BEFORE_IB and not j["perm_id"] and j["filled"] <= EPS


def check_acknowledged_orders_at_ib_once(t: Truth) -> list[str]:
    out: list[str] = []
    at_ib: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in t.sim_orders:
        at_ib[o["orderRef"]].append(o)
    for ref, orders in at_ib.items():
        if len(orders) > 1:
            out.append(f"orderRef {ref} is at IB {len(orders)} times (permIds {[o['permId'] for o in orders]})")
    for ref, attempts in _by_ref(t.records, "place").items():
        acks = [a for a in attempts if a["result"] == "ack"]
        confirmed = [a for a in acks if a.get("status") not in REFUSED and UNKNOWN_OUTCOME not in a.get("reason", "")]
        n = len(at_ib.get(ref, []))
        if confirmed and n != 1 and not (n == 0 and _closed_before_ib(t.journal_orders.get(ref))):
            j = t.journal_orders.get(ref)
            out.append(f"{ref} was acknowledged ({confirmed[0]['status']}) but is at IB {n} times (journal: "
                       f"{j['status'] + ' / ' + j['reason'] if j else 'no entry'})")
        final = attempts[-1]
        if final["result"] == "rejected" and not confirmed and ref in at_ib:
            out.append(f"{ref} was refused to the strategy ({final.get('code')}: {final.get('reason')}) but is at IB "
                       f"as permId {at_ib[ref][0]['permId']} ({at_ib[ref][0]['status']})")
    overtaken = set(amendments_after_cancel(t))
    for ref, mods in _by_ref(t.records, "modify").items():
        last = mods[-1]
        orders = at_ib.get(ref, [])
        if last["result"] != "ack" or len(orders) != 1 or orders[0]["filled"] > EPS or ref in overtaken:
            continue  # only an acknowledged last modification of an unfilled, not yet cancelled order has known terms
        o = orders[0]
        if abs(o["totalQuantity"] - last["qty"]) > EPS or abs((o["lmtPrice"] or 0) - last["limit"]) > EPS:
            out.append(f"{ref}: last acknowledged modification was {last['qty']:g} @ {last['limit']} but IB has "
                       f"{o['totalQuantity']:g} @ {o['lmtPrice']}")
    return out


def amendments_after_cancel(t: Truth) -> list[str]:
    """orderRefs whose modification reached IB after the order's cancel (per the simulator's request log): the
    gateway sends cancels ahead of queued placeOrders, so an amendment followed by a cancel can arrive second and
    be refused by IB on the cancelled order. Not counted against the modification check; reported separately."""
    by_id = {(o["clientId"], o["orderId"]): o["orderRef"] for o in t.sim_orders}
    first_cancel: dict[str, int] = {}
    last_place: dict[str, int] = {}
    for entry in t.sim["request_log"]:
        ref = by_id.get((entry["clientId"], entry["orderId"]))
        if ref is None:
            continue
        if entry["name"] == "cancelOrder":
            first_cancel.setdefault(ref, entry["seq"])
        elif entry["name"] == "placeOrder":
            last_place[ref] = entry["seq"]
    return sorted(ref for ref, seq in last_place.items() if ref in first_cancel and first_cancel[ref] < seq)


def check_order_states_agree(t: Truth, strategies: Iterable[str] | None = None) -> list[str]:
    out: list[str] = []
    wanted = set(strategies) if strategies is not None else None
    at_ib = {o["orderRef"]: o for o in t.sim_orders}
    for ref, j in t.journal_orders.items():
        if wanted is not None and j["strategy_id"] not in wanted:
            continue
        o = at_ib.get(ref)
        if o is None:
            if j["stage"] == "interrupted" and not j["done"]:
                continue  # never reached IB; waits for the strategy's retry (orders.orphan_timeout_s)
            if j["status"] not in CLOSED_BEFORE_IB or j["filled"] > EPS or j["perm_id"]:
                out.append(f"{ref} is not at IB but the journal has it {j['status']} (stage {j['stage']}, "
                           f"filled {j['filled']:g}, perm {j['perm_id']})")
            continue
        if j["perm_id"] and j["perm_id"] != o["permId"]:
            out.append(f"{ref}: journal permId {j['perm_id']} != IB permId {o['permId']}")
        sim_done = o["status"] in SIM_DONE
        if sim_done != bool(j["done"]) and not (o["status"] == "Inactive" and j["status"] == "Inactive"):
            out.append(f"{ref}: IB says {o['status']} (filled {o['filled']:g}) but the journal says {j['status']} "
                       f"(stage {j['stage']}, filled {j['filled']:g})")
        elif o["status"] == "Filled" and j["status"] != "Filled":
            out.append(f"{ref}: IB says Filled but the journal says {j['status']}")
        if abs(o["filled"] - j["filled"]) > EPS:
            out.append(f"{ref}: IB filled {o['filled']:g} but the journal has {j['filled']:g}")
    return out


def check_fills_journalled_once(t: Truth) -> list[str]:
    out: list[str] = []
    sim_keys: Counter[str] = Counter(exec_key(e["execId"]) for e in t.sim_executions)
    for key, n in sim_keys.items():
        if n > 1:
            out.append(f"IB itself lists exec_key {key} {n} times")
    if t.journal_fill_rows != len(t.journal_fills):
        out.append(f"journal has {t.journal_fill_rows} fill rows for {len(t.journal_fills)} exec_keys")
    for e in t.sim_executions:
        key = exec_key(e["execId"])
        j = t.journal_fills.get(key)
        if j is None:
            out.append(f"execution {e['execId']} ({e['orderRef']} {e['shares']:g} @ {e['price']}) is not in the "
                       f"order journal")
        elif j["order_ref"] != e["orderRef"] or abs(j["quantity"] - e["shares"]) > EPS:
            out.append(f"execution {e['execId']}: IB {e['orderRef']} {e['shares']:g}, journal {j['order_ref']} "
                       f"{j['quantity']:g}")
    for key, j in t.journal_fills.items():
        if key not in sim_keys:
            out.append(f"journal fill {j['exec_id']} ({j['order_ref']} {j['quantity']:g}) is not an execution at IB")
    return out


def expected_books(t: Truth) -> dict[str, dict[str, float]]:
    books: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in t.sim_executions:
        parsed = parse_order_ref(e["orderRef"])
        sid = parsed[0] if parsed else registry.EXTERNAL_STRATEGY
        books[sid][e["symbol"]] += e["shares"] if e["side"] == "BOT" else -e["shares"]
    return {sid: {s: q for s, q in b.items() if abs(q) > EPS} for sid, b in books.items()}


def check_fills_in_portfolio_once(t: Truth) -> list[str]:
    out: list[str] = []
    for sid, expected in expected_books(t).items():
        held = t.strategy_books.get(sid, {})
        if not _same(held, expected):
            out.append(f"portfolio books of {sid} {_fmt(held)} != its executions at IB {_fmt(expected)}")
    return out


def check_positions_agree(t: Truth) -> list[str]:
    sim = {p["symbol"]: p["position"] for p in t.sim["positions"] if abs(p["position"]) > EPS}
    out: list[str] = []
    if not _same(t.gateway_positions, sim):
        out.append(f"gateway positions {_fmt(t.gateway_positions)} != IB {_fmt(sim)}")
    if not _same(t.portfolio_positions, sim):
        out.append(f"portfolio positions {_fmt(t.portfolio_positions)} != IB {_fmt(sim)}")
    total: dict[str, float] = defaultdict(float)
    for book in expected_books(t).values():
        for s, q in book.items():
            total[s] += q
    if not _same({s: q for s, q in total.items() if abs(q) > EPS}, sim):
        out.append(f"IB positions {_fmt(sim)} != the sum of its executions {_fmt(total)} (the simulator)")
    return out


def check_no_order_without_approval(t: Truth) -> list[str]:
    out: list[str] = []
    by_id = {(o["clientId"], o["orderId"]): o["orderRef"] for o in t.sim_orders}
    placed: Counter[str] = Counter()
    for entry in t.sim["request_log"]:
        if entry["name"] == "placeOrder":
            placed[by_id.get((entry["clientId"], entry["orderId"]), f"?{entry['clientId']}:{entry['orderId']}")] += 1
    for o in t.sim_orders:
        ref = o["orderRef"]
        if parse_order_ref(ref) is None:
            out.append(f"IB has order permId {o['permId']} with orderRef {ref!r} that is not a Khazad order")
        elif ref not in t.journal_orders:
            out.append(f"IB has {ref} (permId {o['permId']}) that the order manager never journalled")
    for ref, n in placed.items():
        if t.approvals[ref] < n:
            out.append(f"{ref}: IB received {n} placeOrder(s) but the journal holds {t.approvals[ref]} approved "
                       f"risk decision(s)")
        if t.risk_log_approvals[ref] < n:
            out.append(f"{ref}: IB received {n} placeOrder(s) but the risk governor logged "
                       f"{t.risk_log_approvals[ref]} approval(s)")
    return out


def check_halt_in_force(system: System, perm_at_kill: int) -> list[str]:
    """The kill confirmed before the fault still holds everywhere; nothing reached IB after it."""
    out: list[str] = []
    gw = system.call("gateway", GetStatus())
    if not isinstance(gw, GatewayStatus) or gw.trading_state != "HALTED":
        out.append(f"gateway is not HALTED: {getattr(gw, 'trading_state', gw)}")
    risk = system.call("risk", GetRiskState())
    if not isinstance(risk, RiskStateReply) or risk.global_state != "HALTED":
        out.append(f"risk governor is not HALTED: {getattr(risk, 'global_state', risk)}")
    status = system.status()
    if status.trading_state != "HALTED" or status.trading_states.get("gateway:all") != "HALTED" \
            or status.trading_states.get("risk:all") != "HALTED":
        out.append(f"monitor does not report HALTED everywhere: {status.trading_state} {status.trading_states}")
    sim = system.sim()
    late = [f"{o['orderRef']} (perm {o['permId']}, {o['status']})" for o in sim["orders"].values()
            if o["permId"] > perm_at_kill]
    if late:
        out.append(f"orders reached IB after the kill was confirmed: {late}")
    working = [f"{o['orderRef']} ({o['status']})" for o in sim["orders"].values() if o["status"] not in SIM_DONE]
    if working:
        out.append(f"orders still working at IB while HALTED: {working}")
    return out


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return set(a) == set(b) and all(abs(a[k] - b[k]) <= EPS for k in a)


def _fmt(d: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(d.items())) + "}"


#: The invariants checked after every scenario, by name (the halt check needs the kill's context: separate).
INVARIANTS: dict[str, Callable[[Truth], list[str]]] = {
    "acknowledged orders at IB exactly once": check_acknowledged_orders_at_ib_once,
    "order states agree with IB": check_order_states_agree,
    "every fill journalled exactly once": check_fills_journalled_once,
    "every fill in the portfolio exactly once": check_fills_in_portfolio_once,
    "positions agree (IB, gateway, portfolio)": check_positions_agree,
    "no order at IB without a risk approval": check_no_order_without_approval,
}


def violations(t: Truth) -> dict[str, list[str]]:
    """Every invariant's violations (only the broken ones are listed)."""
    found = {name: check(t) for name, check in INVARIANTS.items()}
    return {name: v for name, v in found.items() if v}
