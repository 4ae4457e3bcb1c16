"""Unit tests of the gateway's small modules: halt latch, durable state, exec journal, status interpretation,
exec ids, backoff and the connection transition table."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from actors.gateway import connection as cs
from actors.gateway.convert import attribution, exec_key, exec_revision, parse_since, reject_reason
from actors.gateway.halts import HaltLatch, scope_matches
from actors.gateway.ordertable import IbOrderTable, interpret
from actors.gateway.persist import FILL, PLACED, ExecJournal, GatewayState, StateCorrupt, StateStore
from tests.support.builders import order


def test_interpretation_presubmitted_is_live_never_failed():
    assert interpret("PreSubmitted") == (True, False)
    assert interpret("Submitted") == (True, False)
    assert interpret("PendingCancel") == (True, False)
    assert interpret("Filled") == (False, True)
    assert interpret("Cancelled") == (False, True)
    assert interpret("Inactive") == (False, False)  # may still work at IB: neither live nor done
    assert interpret("PendingSubmit") == (False, False)


def _trade(order_id: int = 1, perm: int = 0, ref: str = "s1/a", client: int = 7, symbol: str = "AAPL"):
    return SimpleNamespace(order=SimpleNamespace(orderId=order_id, permId=perm, clientId=client, orderRef=ref,
                                                 totalQuantity=10.0, action="BUY"),
                           contract=SimpleNamespace(symbol=symbol), orderStatus=SimpleNamespace(status="Submitted"))


def test_order_table_publishes_changes_once_and_done_stays_done():
    table = IbOrderTable()
    spec = order(coid="a")
    rec = table.add_placed(spec, 1, 7)
    kw = dict(filled=0.0, remaining=10.0, avg_fill_price=0.0)
    assert table.observe(rec, status="PendingSubmit", **kw).status == "PendingSubmit"
    assert table.observe(rec, status="PendingSubmit", **kw) is None  # no change, no event
    assert table.observe(rec, status="Submitted", **kw).is_live
    done = table.observe(rec, status="Cancelled", **kw)
    assert done.is_done and rec.done_mono is not None
    assert table.observe(rec, status="Submitted", **kw) is None  # a done order stays done
    fill = table.observe(rec, status="Filled", filled=10.0, remaining=0.0, avg_fill_price=1.0)
    assert fill is not None and fill.status == "Filled"  # a fill that raced the cancel wins
    assert table.observe(rec, status="Cancelled", **kw) is None


def test_order_table_finds_orders_by_perm_id_order_id_and_ref_and_attributes_external():
    table = IbOrderTable()
    rec = table.add_placed(order(coid="a"), 4, 7)
    same, created = table.attach(_trade(order_id=4, perm=99))
    assert same is rec and not created and rec.perm_id == 99
    assert table.attach(_trade(order_id=0, perm=99, ref=""))[0] is rec
    ext, created = table.attach(_trade(order_id=5, perm=100, ref="", client=0))
    assert created and ext.strategy_id == "external" and ext.key == "perm:100"
    assert attribution("s1/abc") == ("s1", "abc") and attribution("manual") == ("external", "")
    assert {r.key for r in table.working("strategy:s1")} == {"s1/a"}


def test_ib_async_validation_error_keeps_the_live_status():
    table = IbOrderTable()
    rec = table.add_placed(order(coid="a"), 1, 7)
    table.observe(rec, status="Submitted", filled=0.0, remaining=10.0, avg_fill_price=0.0)
    ev = table.observe(rec, status="ValidationError", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                       error_code=399, reason="warning")
    assert ev.status == "Submitted" and ev.is_live and ev.error_code == 399


def test_exec_ids_and_times():
    assert exec_key("0001.0000002a.01.01") == "0001.0000002a.01"
    assert exec_revision("0001.0000002a.01.02") == 2 and exec_revision("plain") == 1
    assert exec_key("plain") == "plain"
    assert parse_since("20250602 14:00:00").hour == 14 and parse_since("20250602-14:00:00").minute == 0
    assert parse_since("") is None
    with pytest.raises(ValueError):
        parse_since("yesterday")
    assert reject_reason("Order rejected - reason:x", '{"reason": "no margin"}') == "no margin"
    assert reject_reason("plain text", "") == "plain text"


def test_halt_latch_scopes_and_epochs():
    latch = HaltLatch()
    assert latch.blocking_scope("s1", "AAPL") is None and latch.global_state == "ACTIVE"
    latch.latch("strategy:s1", reason="r")
    latch.latch("symbol:msft", reason="r")
    assert latch.epoch == 2
    assert latch.blocking_scope("s1", "AAPL") == "strategy:s1"
    assert latch.blocking_scope("s2", "MSFT") == "symbol:msft"
    assert latch.blocking_scope("s2", "AAPL") is None
    assert latch.release("strategy:s1") == ["strategy:s1"] and latch.epoch == 3
    assert latch.release("strategy:s1") == [] and latch.epoch == 3  # nothing released: no new epoch
    latch.latch("all", reason="kill")
    assert latch.blocking_scope("s9", "X") == "all" and latch.global_state == "HALTED"
    assert latch.release("all") == ["all", "symbol:msft"] and latch.halted_scopes() == []
    assert scope_matches("all", "a", "b") and not scope_matches("strategy:x", "y", "b")


def test_state_store_roundtrip_atomic_and_corrupt(tmp_path):
    store = StateStore(tmp_path / "state" / "gateway.json")
    assert store.load() == GatewayState()
    latch = HaltLatch()
    latch.latch("all", reason="kill", kill_id="k1")
    store.save(latch.to_state())
    again = HaltLatch.from_state(store.load())
    assert again.globally_halted and again.epoch == 1 and again.scopes["all"].kill_id == "k1"
    assert not list((tmp_path / "state").glob(".*tmp"))  # no temp file left behind
    store.path.write_text('{"epoch": "not a number"')
    with pytest.raises(StateCorrupt):
        store.load()


def test_exec_journal_survives_reload_and_torn_lines(tmp_path):
    path = tmp_path / "gateway.execs.jsonl"
    j = ExecJournal(path)
    j.load()
    j.record(FILL, "a.01")
    j.record(FILL, "b.01")
    j.flush()
    with open(path, "ab") as fh:
        fh.write(b'{"k":"f","id":"torn')  # a crash in the middle of a line
    k = ExecJournal(path)
    k.load()
    assert set(k.fills) == {"a.01", "b.01"}
    k.record(FILL, "c.01")
    k.close()
    m = ExecJournal(path)
    m.load()
    assert set(m.fills) == {"a.01", "b.01", "c.01"}
    old = ExecJournal(path, retention_s=-1)
    old.load()
    assert old.fills == {}


def test_exec_journal_remembers_placed_order_refs_across_reload_and_compaction(tmp_path):
    path = tmp_path / "gateway.execs.jsonl"
    j = ExecJournal(path)
    j.load()
    j.record(PLACED, "s1/a")
    j.record(FILL, "a.01")
    j.close()
    k = ExecJournal(path)
    k.load()
    assert k.has_placed("s1/a") and not k.has_placed("s1/b") and not k.has_fill("s1/a")
    k.compact()
    m = ExecJournal(path)
    m.load()
    assert m.has_placed("s1/a") and m.has_fill("a.01")


def test_backoff_grows_with_jitter_and_caps():
    rng = random.Random(1)
    delays = [cs.backoff_delay(a, 0.5, 30.0, rng) for a in range(12)]
    assert all(0.25 <= d <= 30.0 for d in delays)
    assert delays[0] <= 0.5 and max(delays[8:]) <= 30.0 and min(delays[8:]) >= 15.0
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_connection_transition_table():
    t = cs.ConnectionTracker()
    for s in (cs.CONNECTING, cs.CONNECTED, cs.RECONCILING, cs.READY, cs.DISCONNECTED, cs.RECONCILING, cs.READY):
        assert t.move(s)
    assert not t.move(cs.READY, ib_code=2104) and t.ib_code == 2104
    with pytest.raises(cs.IllegalTransition):
        t.move(cs.CONNECTED)
    t.move(cs.STOPPED)
    with pytest.raises(cs.IllegalTransition):
        t.move(cs.CONNECTING)


def test_sweep_retries_a_slow_open_order_list_instead_of_giving_up():
    import asyncio

    from actors.gateway.cancels import CancelSweeper

    class SlowListSession:
        """IB's open-order list times out once (a thousand orders on a loaded host), then answers."""

        def __init__(self) -> None:
            self.lists = 0
            self.global_cancels = 0

        def global_cancel(self) -> None:
            self.global_cancels += 1

        async def all_open_orders(self, timeout: float) -> list:
            self.lists += 1
            if self.lists == 1:
                raise asyncio.TimeoutError
            return []

    session = SlowListSession()
    sweeper = CancelSweeper(session, IbOrderTable(), client_id=1)
    result = asyncio.run(sweeper.sweep("all", use_global=True, timeout_s=5.0))
    assert result.confirmed and result.remaining == [] and session.lists == 2 and result.rounds == 2


class _CountingSweeper:
    """A CancelSweeper double: counts sweeps and re-verifications; each sweep confirms (or not) when released."""

    def __init__(self, *, confirm: bool = True) -> None:
        import asyncio

        self.confirm = confirm
        self.sweeps = 0
        self.reverifies = 0
        self.release = asyncio.Event()

    async def sweep(self, scope: str, *, use_global: bool, timeout_s: float, cause: str = "", keep=None):
        import time

        from actors.gateway.cancels import SweepResult

        self.sweeps += 1
        start = time.monotonic()
        await self.release.wait()
        return SweepResult(scope=scope, confirmed=self.confirm, global_cancels=1,
                           verified_mono=start if self.confirm else 0.0)

    async def reverify(self, previous, *, use_global: bool, timeout_s: float, cause: str = "", keep=None):
        import time

        from actors.gateway.cancels import SweepResult

        self.reverifies += 1
        return SweepResult(scope=previous.scope, confirmed=True, global_cancels=previous.global_cancels,
                           verified_mono=time.monotonic())


def test_sweep_registry_runs_one_sweep_per_command_id_and_verifies_again_after_a_later_latch():
    import asyncio
    import time

    from actors.gateway.cancels import SweepRegistry

    async def scenario() -> tuple[_CountingSweeper, list]:
        sweeper = _CountingSweeper()
        registry = SweepRegistry(sweeper, timeout_s=5.0)  # type: ignore[arg-type]
        first = asyncio.ensure_future(registry.run("k1", "all"))  # e.g. the risk governor's emergency cancel
        second = asyncio.ensure_future(registry.run("k1", "all"))  # its bus copy, while the sweep runs
        sweeper.release.set()  # both register before the sweep task first runs (the loop is FIFO)
        results = list(await asyncio.gather(first, second))
        latched = time.monotonic()  # the kill with the same id latches after that sweep confirmed
        results.append(await registry.run("k1", "all", not_before=latched))
        results.append(await registry.run("k1", "all", not_before=latched))  # verified after the latch now
        results.append(await registry.run("k1", "symbol:MSFT"))  # another scope is another sweep
        return sweeper, results

    sweeper, results = asyncio.run(scenario())
    assert sweeper.sweeps == 2 and sweeper.reverifies == 1
    assert results[0] is results[1] and all(r.confirmed for r in results)
    assert results[2] is results[3] and results[2].verified_mono >= results[0].verified_mono


def test_sweep_registry_sweeps_again_after_an_unconfirmed_sweep():
    import asyncio

    from actors.gateway.cancels import SweepRegistry

    async def scenario() -> _CountingSweeper:
        sweeper = _CountingSweeper(confirm=False)
        sweeper.release.set()
        registry = SweepRegistry(sweeper, timeout_s=5.0)  # type: ignore[arg-type]
        assert not (await registry.run("k2", "all")).confirmed
        assert not (await registry.run("k2", "all")).confirmed  # orders remained: a retry cancels again
        return sweeper

    assert asyncio.run(scenario()).sweeps == 2
