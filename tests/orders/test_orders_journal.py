"""Unit tests of the order journal and the ledger on top of it: durability, rebuild, fill de-duplication."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.orders.journal import Journal
from actors.orders.ledger import OrderLedger
from actors.orders.lifecycle import CANCELLED, FILLED, SUBMITTED
from actors.orders.stages import Stage
from bus.messages import FillEvent, Instrument, OrderStatusEvent, OrderUpdate, PlaceOrder
from tests.support.builders import order_for

#: this module's orders: a 100-lot limit order of s1, client order id c1 unless said otherwise
spec = order_for("s1", coid="c1", qty=100.0, limit=10.0)


def fill(exec_id: str, qty: float, price: float, ref: str = "s1/c1") -> FillEvent:
    return FillEvent(exec_id=exec_id, exec_key=exec_id.rsplit(".", 1)[0], order_ref=ref,
                     instrument=Instrument(symbol="AAPL"), side="BUY", quantity=qty, price=price)


def status(st: str, ref: str = "s1/c1", filled: float = 0.0, **kw: object) -> OrderStatusEvent:
    return OrderStatusEvent(order_ref=ref, status=st, filled=filled, ib_order_id=11, perm_id=1100, **kw)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "orders.sqlite"


@pytest.fixture
def published() -> list[tuple[str, object]]:
    return []


@pytest.fixture
def book(path: Path, published: list[tuple[str, object]]):
    j = Journal(path)
    yield OrderLedger(j, lambda topic, body: published.append((topic, body)))
    j.close()


def test_journal_uses_wal_and_creates_schema(path: Path) -> None:
    j = Journal(path)
    try:
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"orders", "events", "fills"} <= tables
        db.close()
    finally:
        j.close()


def test_request_is_committed_before_create_returns_visible_to_another_connection(book: OrderLedger,
                                                                                  path: Path) -> None:
    # committed (survives a process crash); the fsync comes with "submitting" or the rejection, see book.create
    s = spec()
    before = book.journal.commits
    book.create(s, PlaceOrder(order=s))
    assert book.journal.commits == before + 1
    other = sqlite3.connect(path)  # another reader, as after a crash: the row and its request event are there
    try:
        assert other.execute("SELECT status, stage FROM orders WHERE order_ref = 's1/c1'").fetchone() == (
            "Received", "received")
        assert other.execute("SELECT kind, msg_type FROM events WHERE order_ref = 's1/c1'").fetchall() == [
            ("request", "place_order")]
    finally:
        other.close()


def test_decision_and_submitting_are_one_durable_commit_in_order(book: OrderLedger, path: Path) -> None:
    s = spec()
    rec = book.create(s, PlaceOrder(order=s))
    commits, durable = book.journal.commits, book.journal.durable_commits
    with book.writing(rec, durable=True) as write:
        rec.move_to(Stage.APPROVED)
        write.event("risk_decision", detail="ok")
        rec.move_to(Stage.SUBMITTING)
        write.event("submitting")
    assert (book.journal.commits, book.journal.durable_commits) == (commits + 1, durable + 1)
    other = sqlite3.connect(path)
    try:
        assert [k for (k,) in other.execute("SELECT kind FROM events WHERE order_ref = 's1/c1' ORDER BY id")] == [
            "request", "risk_decision", "submitting"]
        assert other.execute("SELECT stage FROM orders WHERE order_ref = 's1/c1'").fetchone() == ("submitting",)
    finally:
        other.close()


def test_failed_transaction_writes_nothing(book: OrderLedger) -> None:
    with pytest.raises(RuntimeError):
        with book.journal.transaction(durable=True):
            book.journal.append_event("s1/x", "request")
            raise RuntimeError("boom")
    assert book.journal.events("s1/x") == []


def test_rebuild_after_reopen_restores_every_order_exactly(book: OrderLedger, path: Path) -> None:
    a = book.create(spec(coid="a"), PlaceOrder(order=spec(coid="a")))
    a.move_to(Stage.ACKED)
    book.apply_status_event(status(SUBMITTED, "s1/a"))
    book.apply_fill(fill("e1.01", 40, 10.0, "s1/a"))
    book.apply_status_event(status(SUBMITTED, "s1/a", filled=40, avg_fill_price=10.0))
    b = book.create(spec(coid="b"), PlaceOrder(order=spec(coid="b")))
    b.set_status(CANCELLED, b.updated_wall_ns + 1, reason="cancelled before submission")
    b.move_to(Stage.CLOSED)
    book.commit(b, "cancelled_locally", durable=True)
    before = {ref: (r.view(), r.stage, r.sent, dict(r.fills)) for ref, r in book.records.items()}
    book.journal.close()

    j2 = Journal(path)
    try:
        book2 = OrderLedger(j2, lambda *_: None)
        assert book2.rebuild() == 2
        after = {ref: (r.view(), r.stage, r.sent, dict(r.fills)) for ref, r in book2.records.items()}
        assert after == before
        assert book2.records["s1/a"].filled == 40 and book2.records["s1/a"].status == SUBMITTED
        # a replayed fill after the restart is still a duplicate
        assert book2.apply_fill(fill("e1.01", 40, 10.0, "s1/a")) == "duplicate"
    finally:
        j2.close()


def test_exec_key_is_unique_in_the_journal(book: OrderLedger, path: Path) -> None:
    book.create(spec(), PlaceOrder(order=spec()))
    assert book.apply_fill(fill("e1.01", 10, 10.0)) == "new"
    assert book.apply_fill(fill("e1.01", 10, 10.0)) == "duplicate"
    assert book.apply_fill(fill("e1.02", 10, 10.5)) == "correction"
    rows = book.journal.fill_rows("s1/c1")
    assert len(rows) == 1 and rows[0]["exec_id"] == "e1.02" and rows[0]["price"] == 10.5
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO fills (exec_key, exec_id, order_ref, symbol, side, quantity, price, wall_ns) "
                       "VALUES ('e1', 'e1.03', 's1/c1', 'AAPL', 'BUY', 1, 1, 0)")
    finally:
        db.close()
    assert book.records["s1/c1"].filled == 10


def test_status_events_are_journalled_then_published_in_order(book: OrderLedger,
                                                              published: list[tuple[str, object]]) -> None:
    book.create(spec(), PlaceOrder(order=spec()))
    for st in ("PendingSubmit", "PreSubmitted", "Submitted"):
        book.apply_status_event(status(st))
    book.apply_fill(fill("e1.01", 100, 10.0))
    book.apply_status_event(status(FILLED, filled=100, avg_fill_price=10.0))
    statuses = [b.order.status for t, b in published if isinstance(b, OrderUpdate)]
    assert all(t == "order.s1" for t, _ in published)
    assert statuses == ["Received", "PendingSubmit", "PreSubmitted", "Submitted", "Submitted", "Filled"]
    kinds = [e.kind for e in book.journal.events("s1/c1")]
    assert kinds == ["request", "status", "status", "status", "fill", "status"]
    assert book.journal.load_order("s1/c1").status == FILLED


def test_impossible_transition_is_journalled_with_a_flag(book: OrderLedger) -> None:
    book.create(spec(), PlaceOrder(order=spec()))
    book.apply_status_event(status(FILLED, filled=100, avg_fill_price=10.0))
    book.apply_status_event(status(SUBMITTED, filled=100))
    last = book.journal.events("s1/c1")[-1]
    assert last.flag == "impossible" and "Filled -> Submitted" in last.detail
    assert book.records["s1/c1"].status == FILLED and book.impossible == 1


def test_events_for_unknown_order_refs_are_journalled_as_external(book: OrderLedger) -> None:
    assert book.apply_status_event(status(SUBMITTED, ref="manual-order")) is None
    assert book.apply_fill(fill("x1.01", 5, 1.0, ref="")) == "new"
    kinds = [(e.kind, e.flag) for e in book.journal.events()]
    assert ("external_status", "external") in kinds and ("external_fill", "") in kinds
    assert book.external_events == 2


def test_query_orders_filters_by_strategy_symbol_and_day(book: OrderLedger) -> None:
    for coid, sym, strat in (("a", "AAPL", "s1"), ("b", "MSFT", "s1"), ("c", "AAPL", "s2")):
        book.create(spec(coid=coid, symbol=sym, strategy=strat), PlaceOrder(order=spec(coid=coid, symbol=sym, strategy=strat)))
    refs = lambda recs: sorted(r.order_ref for r in recs)  # noqa: E731
    assert refs(book.journal.query_orders(strategy_id="s1")) == ["s1/a", "s1/b"]
    assert refs(book.journal.query_orders(symbol="AAPL")) == ["s1/a", "s2/c"]
    assert refs(book.journal.query_orders(created_since_ns=2**62)) == ["s1/a", "s1/b", "s2/c"]  # still working
    assert refs(book.working(strategy_id="s2")) == ["s2/c"]


def test_query_orders_for_a_set_of_strategies_pages_within_that_set(book: OrderLedger) -> None:
    # a strategy key acting for several ids lists only theirs, and its pages are full pages of its own orders
    for coid, strat in (("a", "s1"), ("b", "s2"), ("c", "s3"), ("d", "s1"), ("e", "s3")):
        book.create(spec(coid=coid, strategy=strat), PlaceOrder(order=spec(coid=coid, strategy=strat)))
    refs = lambda recs: [r.order_ref for r in recs]  # noqa: E731
    mine = frozenset({"s1", "s3"})
    assert refs(book.journal.query_orders(strategy_ids=mine)) == ["s3/e", "s1/d", "s3/c", "s1/a"]  # newest first
    assert refs(book.journal.query_orders(strategy_ids=mine, limit=2, offset=2)) == ["s3/c", "s1/a"]
    assert refs(book.journal.query_orders(strategy_ids=frozenset())) == []


def test_prune_forgets_old_finished_orders_but_find_reads_them_back(book: OrderLedger) -> None:
    rec = book.create(spec(), PlaceOrder(order=spec()))
    book.apply_status_event(status(FILLED, filled=100, avg_fill_price=10.0))
    assert book.prune(now_ns=rec.updated_wall_ns + 10**15) == 1 and "s1/c1" not in book.records
    again = book.find("s1/c1")
    assert again is not None and again.status == FILLED and again.filled == 100


def test_version_1_journal_is_migrated_keeping_its_events(path: Path) -> None:
    j = Journal(path)
    j.append_event("s1/old", "request", status="Received")
    j.close()
    db = sqlite3.connect(path)  # as the previous version wrote it: no events.stage, user_version 1
    db.execute("ALTER TABLE events DROP COLUMN stage")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    j = Journal(path)
    try:
        (old,) = j.events("s1/old")
        assert (old.kind, old.status, old.stage) == ("request", "Received", "")
        j.append_event("s1/new", "request", status="Received", stage="received")
        assert j.events("s1/new")[0].stage == "received"
    finally:
        j.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    finally:
        db.close()


def test_events_that_change_an_order_carry_its_stage_and_others_do_not(book: OrderLedger) -> None:
    rec = book.create(spec(), PlaceOrder(order=spec()))
    book.journal_only(rec.order_ref, "request", flag="duplicate", msg=PlaceOrder(order=spec()))
    book.apply_status_event(status(SUBMITTED))
    assert [(e.kind, e.stage) for e in book.journal.events("s1/c1")] == [
        ("request", "received"), ("request", ""), ("status", "acked")]


def test_a_group_saved_in_a_transaction_reads_back_whole_after_a_reopen_and_an_unknown_key_is_none(
        path: Path) -> None:
    """An order group is journalled as one unit (what a restart mid-bracket recovers): every member, its kind, the
    OCA type and the time it was journalled come back from a new connection; another strategy's key finds nothing."""
    from sdk.groups import bracket_group, oca_group
    from tests.support.builders import order

    aapl = Instrument(symbol="AAPL", con_id=265598)
    bracket = bracket_group("s1", aapl, "BUY", 10, 100.0, 110.0, 90.0)
    members = [order(strategy="s1", coid=f"m{i}", limit=100.0 + i) for i in range(2)]
    oca = oca_group("s1", members, oca_type=3)
    j = Journal(path)
    with j.transaction(durable=True):
        j.save_group(bracket, 1_700_000_000_000_000_001)
        j.save_group(oca, 1_700_000_000_000_000_002)
    j.close()
    again = Journal(path)
    got = again.load_group(bracket.key)
    assert got == (bracket, 1_700_000_000_000_000_001)
    assert got is not None and [o.client_order_id for o in got[0].orders] == [
        o.client_order_id for o in bracket.orders] and got[0].kind == "bracket"
    got_oca = again.load_group(oca.key)
    assert got_oca is not None and got_oca[0].kind == "oca" and got_oca[0].oca_type == 3
    assert got_oca[1] == 1_700_000_000_000_000_002
    assert again.load_group(f"s2/{bracket.group_id}") is None
    with pytest.raises(sqlite3.IntegrityError), again.transaction(durable=False):
        again.save_group(bracket, 1)  # a group is journalled once: its key is unique
    assert again.load_group(bracket.key) == (bracket, 1_700_000_000_000_000_001)
    again.close()
