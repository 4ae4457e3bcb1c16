"""The gateway's safety guarantees in process (issue 12 item 7): the durable state file, the halt latch's keeper,
the kill switch, the cancel sweeps and the order table, each against real collaborators and an IB double (the
fast subset tools/mutate.py runs against the gateway's safety modules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway.halts import HaltLatch
from actors.gateway.persist import GatewayState, StateStore, atomic_write
from tests.support.fsync_spy import assert_atomic_durable_write, spy_on_disk

# -- durability of the state file -----------------------------------------------------------------------------


def test_atomic_write_fsyncs_the_full_content_before_the_rename_and_the_folder_after(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    # mutation caught: persist.atomic_write without `os.fsync(fh.fileno())` (or with it after os.replace)
    path = (tmp_path / "state" / "gateway.json").resolve()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    seen = spy_on_disk(monkeypatch)
    atomic_write(path, b"x" * 4096)
    assert_atomic_durable_write(seen, path)
    assert path.read_bytes() == b"x" * 4096
    assert [p.name for p in path.parent.iterdir()] == ["gateway.json"]  # no temp file left behind


def test_atomic_write_leaves_a_private_file_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)  # an older run's looser file
    old = os.umask(0)
    try:
        atomic_write(path, b"new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_bytes() == b"new"


def test_halted_state_is_fsynced_before_it_replaces_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = (tmp_path / "gateway.json").resolve()
    store = StateStore(path)
    store.save(GatewayState())
    latch = HaltLatch()
    latch.latch("all", reason="kill", kill_id="k1")
    seen = spy_on_disk(monkeypatch)
    store.save(latch.to_state())
    assert_atomic_durable_write(seen, path)
    again = store.load()
    assert again.epoch == 1 and [h.scope for h in again.halted] == ["all"] and again.halted[0].kill_id == "k1"
    assert again.updated_wall_ns > 0


# -- an IB double for the kill switch and the sweeps ---------------------------------------------------------

import asyncio  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from ib_insync import LimitOrder, OrderStatus, Stock, Trade  # noqa: E402

from actors.gateway.cancels import (  # noqa: E402
    CANCEL_RESEND_S, CancelSweeper, SweepRegistry, SweepResult, UnsentOrders,
)
from actors.gateway.killswitch import COMMAND_MEMORY, CommandMemory, HaltKeeper, KillSwitch  # noqa: E402
from actors.gateway.ordertable import TERMINAL, IbOrderTable  # noqa: E402
from actors.gateway.pacing import PacedSender  # noqa: E402
from bus.messages import CancelScope, EmergencyCancel, Kill, Resume  # noqa: E402
from bus.messages import OrderSpec  # noqa: E402
from tests.support.builders import order  # noqa: E402


def order_spec(coid: str, *, strategy: str = "s1", symbol: str = "AAPL", **_: object) -> OrderSpec:
    """A resting limit order of ``strategy`` (BUY 10 at 100)."""
    return order(coid=coid, strategy=strategy, symbol=symbol, limit=100.0)

CLIENT = 7


def placed(table: IbOrderTable, spec: Any, trade: Any, client_id: int) -> Any:
    """File an order's record as the gateway does before sending it, then attach the library's Trade."""
    rec = table.add_placed(spec, int(trade.order.orderId), client_id)
    table.attach(trade)
    return rec


class FakeOutbox:
    """What the gateway would publish, recorded."""

    def __init__(self) -> None:
        self.statuses: list[Any] = []
        self.alerts: list[tuple[str, str, dict]] = []
        self.kills: list[Kill] = []
        self.states: list[Any] = []

    def maybe_order_status(self, ev: Any) -> None:
        if ev is not None:
            self.statuses.append(ev)

    def order_status(self, ev: Any) -> None:
        self.statuses.append(ev)

    def alert(self, severity: str, message: str, **detail: str) -> None:
        self.alerts.append((severity, message, detail))

    def kill(self, kill: Kill) -> None:
        self.kills.append(kill)

    def trading_state(self, ev: Any) -> None:
        self.states.append(ev)


class FakeIb:
    """IB as a sweep sees it: reqGlobalCancel ends every order but the sticky ones (IB's PreSubmitted gap) and the
    stuck ones, a cancel by id ends any order but a stuck one, and the open-order list names what still works. Every
    end is reported to the order table, as IB's orderStatus would be. ``on_global`` runs at the global cancel."""

    def __init__(self, table: IbOrderTable, outbox: FakeOutbox) -> None:
        self.table = table
        self.outbox = outbox
        self.trades: dict[int, Trade] = {}
        self.sticky: set[int] = set()
        self.stuck: set[int] = set()
        self.calls: list[tuple[str, int]] = []
        self.on_global: Any = None
        self.list_error: BaseException | None = None
        self.list_errors_left = -1  # -1: list_error every time; n: only the next n lists
        self.list_timeouts: list[float] = []
        self.delay = 0.0  # seconds before IB reports a cancel (0: at once)
        self.fills_instead: set[int] = set()  # orders that fill instead of cancelling
        self._perm = 5000

    def add(self, ref: str, oid: int, *, strategy: str = "s1", symbol: str = "AAPL", client_id: int = CLIENT,
            sticky: bool = False, stuck: bool = False, status: str = "Submitted", known: bool = True) -> Trade:
        self._perm += 1
        coid = ref.partition("/")[2] or ref
        spec = order_spec(coid, strategy=strategy, symbol=symbol, order_type="LMT", limit=100.0)
        ref = spec.order_ref if client_id == CLIENT else ref
        lmt = LimitOrder("BUY", 10, 100.0, orderRef=ref, orderId=oid, clientId=client_id, permId=self._perm)
        trade = Trade(contract=Stock(symbol, "SMART", "USD"), order=lmt, orderStatus=OrderStatus(status=status))
        self.trades[oid] = trade
        if sticky:
            self.sticky.add(oid)
        if stuck:
            self.stuck.add(oid)
        if not known:  # at IB, never reported to this gateway (another client's order, before any list)
            return trade
        if client_id == CLIENT:
            rec = placed(self.table, spec, trade, client_id)
            rec.transmitted = True
        else:
            rec, _ = self.table.attach(trade)
        self.table.observe(rec, status=status, filled=0.0, remaining=10.0, avg_fill_price=0.0)
        return trade

    def _end(self, oid: int) -> None:
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._end_now, oid)
        else:
            self._end_now(oid)

    def _end_now(self, oid: int) -> None:
        trade = self.trades[oid]
        if trade.orderStatus.status in TERMINAL:
            return
        final = "Filled" if oid in self.fills_instead else "Cancelled"
        trade.orderStatus.status = final
        rec = self.table.find(trade)
        if rec is not None and rec.client_id == CLIENT:  # IB reports another client's orders to that client only
            self.outbox.maybe_order_status(self.table.observe(rec, status=final, filled=0.0, remaining=10.0,
                                                              avg_fill_price=0.0))

    def global_cancel(self) -> None:
        self.calls.append(("global", 0))
        if self.on_global is not None:
            self.on_global()
        for oid in list(self.trades):
            if oid not in self.sticky and oid not in self.stuck:
                self._end(oid)

    def cancel(self, order: Any) -> None:
        self.calls.append(("cancel", order.orderId))
        if order.orderId not in self.stuck:
            self._end(order.orderId)

    async def all_open_orders(self, timeout: float) -> list[Trade]:
        self.calls.append(("list", 0))
        self.list_timeouts.append(timeout)
        if self.list_error is not None and self.list_errors_left != 0:
            self.list_errors_left -= 1
            raise self.list_error
        return [t for t in self.trades.values() if t.orderStatus.status not in TERMINAL]

    def ib_status(self, trade: Trade) -> str:
        return trade.orderStatus.status

    def working(self) -> list[str]:
        return sorted(t.order.orderRef for t in self.trades.values() if t.orderStatus.status not in TERMINAL)

    def count(self, name: str) -> int:
        return sum(1 for c, _ in self.calls if c == name)


def place_msg(oid: int) -> str:
    """A queued placeOrder as the pacer holds it (``3\\0<orderId>\\0...``)."""
    return f"3\0{oid}\0AAPL\0STK"


class Gateway:
    """The kill switch with its real collaborators (latch, state file, table, sweeper, registry, pacer) around
    FakeIb; the pacer's clock stands still, so anything beyond its first message stays queued."""

    def __init__(self, tmp_path: Path, *, timeout_s: float = 1.0, protective: Any = None) -> None:
        self.path = tmp_path / "state" / "gateway.json"
        self.table = IbOrderTable()
        self.outbox = FakeOutbox()
        self.latch = HaltLatch()
        self.store = StateStore(self.path)
        self.halts = HaltKeeper(self.latch, self.store, self.outbox)  # type: ignore[arg-type]
        self.ib = FakeIb(self.table, self.outbox)
        self.sweeper = CancelSweeper(self.ib, self.table, client_id=CLIENT)
        self.sweeps = SweepRegistry(self.sweeper, timeout_s=timeout_s)
        self.sent: list[str] = []
        self.sender = PacedSender(self.sent.append, 1, clock=lambda: 0.0, call_at=lambda at, fn: None)
        self.unsent = UnsentOrders(self.sender, self.table, self.outbox, client_id=CLIENT)  # type: ignore[arg-type]
        self.connected = True
        self.switch = KillSwitch(self.halts, self.sweeps, self.unsent, self.table, self.outbox,  # type: ignore
                                 is_connected=lambda: self.connected, protective=protective)

    def saved(self) -> GatewayState:
        return self.store.load()

    def queue_unsent(self, ref: str, oid: int, *, strategy: str = "s1") -> None:
        """An order handed to the pacer but not transmitted yet (its record filed, its placeOrder queued)."""
        spec = order_spec(ref, strategy=strategy, order_type="LMT", limit=100.0)
        lmt = LimitOrder("BUY", 10, 100.0, orderRef=spec.order_ref, orderId=oid, clientId=CLIENT)
        trade = Trade(contract=Stock("AAPL", "SMART", "USD"), order=lmt, orderStatus=OrderStatus(status="PendingSubmit"))
        placed(self.table, spec, trade, CLIENT)
        self.sender.submit(place_msg(oid))


def kill(kill_id: str = "k1", scope: str = "all") -> Kill:
    return Kill(kill_id=kill_id, scope=scope, reason="test kill", origin="test")  # type: ignore[arg-type]


def test_kill_persists_halted_and_its_pending_sweep_before_anything_is_cancelled(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/b", 2)
    at_cancel: list[GatewayState] = []
    gw.ib.on_global = lambda: at_cancel.append(gw.saved())
    report = asyncio.run(gw.switch.kill(kill()))
    (state,) = at_cancel
    assert [h.scope for h in state.halted] == ["all"] and state.epoch == 1 and state.halted[0].kill_id == "k1"
    assert [(p.command_id, p.scope, p.kind) for p in state.pending] == [("k1", "all", "kill")]
    # confirmed: the pending sweep is cleared on disk, the latch stays
    assert report.confirmed and report.cancelled == 2 and report.remaining == 0 and report.remaining_order_refs == []
    assert (report.command_id, report.scope, report.trading_state, report.epoch) == ("k1", "all", "HALTED", 1)
    final = gw.saved()
    assert final.pending == [] and [h.scope for h in final.halted] == ["all"]
    assert gw.outbox.kills == [kill()]  # relayed at once; the latch itself travels in the heartbeat
    assert gw.ib.working() == [] and gw.outbox.alerts == []


def test_kill_while_disconnected_is_durable_and_the_sweep_runs_after_the_reconnect(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/b", 2)
    gw.connected = False
    report = asyncio.run(gw.switch.kill(kill("k-off")))
    assert gw.ib.calls == []  # nothing can reach IB
    assert not report.confirmed and report.trading_state == "HALTED" and report.epoch == 1
    assert report.remaining == 2 and sorted(report.remaining_order_refs) == ["s1/a", "s1/b"]
    assert report.cancelled == 0 and "disconnected" in report.detail
    assert [a[0] for a in gw.outbox.alerts] == ["critical"] and "k-off" in gw.outbox.alerts[0][1]
    state = gw.saved()  # a crash now comes back HALTED with the sweep to finish
    assert [h.scope for h in state.halted] == ["all"] and [p.command_id for p in state.pending] == ["k-off"]
    restarted = HaltLatch.from_state(state)
    assert restarted.globally_halted and list(restarted.pending or {}) == ["k-off"]
    gw.connected = True
    asyncio.run(gw.switch.finish_pending("reconnect"))
    assert gw.ib.working() == [] and gw.saved().pending == [] and gw.latch.pending == {}
    assert [h.scope for h in gw.saved().halted] == ["all"]


def test_an_unconfirmed_kill_alerts_keeps_its_pending_sweep_and_lists_what_works(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, timeout_s=0.3)
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/stuck", 2, stuck=True)
    report = asyncio.run(gw.switch.kill(kill("k-stuck")))
    assert not report.confirmed and report.remaining == 1 and report.remaining_order_refs == ["s1/stuck"]
    assert report.cancelled == 1 and report.elapsed_ms > 0
    (severity, message, detail), = gw.outbox.alerts
    assert severity == "critical" and "k-stuck" in message and "1 order(s) still working" in message
    assert detail == {"remaining": "s1/stuck"}
    assert [p.command_id for p in gw.saved().pending] == ["k-stuck"]
    asyncio.run(gw.switch.finish_pending("reconnect"))  # still stuck: still pending, alerted again
    assert [p.command_id for p in gw.saved().pending] == ["k-stuck"]
    assert len(gw.outbox.alerts) == 2 and "after reconnect" in gw.outbox.alerts[1][1]
    assert gw.outbox.alerts[1][2] == {"remaining": "s1/stuck"}


def test_kill_drops_queued_place_orders_and_reports_them_cancelled(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.sender.submit("99\0warm-up")  # uses the pacer's one token: what follows stays queued
    for i in range(3):
        gw.queue_unsent(f"q{i}", 10 + i)
    assert gw.sender.queued == 3
    report = asyncio.run(gw.switch.kill(kill("k-q")))
    assert gw.sender.queued == 0 and gw.sent == ["99\0warm-up"]
    assert report.confirmed and "3 unsent order message(s) dropped" in report.detail
    cancelled = [e for e in gw.outbox.statuses if e.status == "Cancelled"]
    assert sorted(e.order_ref for e in cancelled) == ["s1/q0", "s1/q1", "s1/q2"]
    assert all("before it was transmitted" in e.reason and e.is_done for e in cancelled)


def test_kill_of_one_strategy_cancels_its_orders_by_id_and_drops_only_its_queued_ones(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("a/1", 1, strategy="a")
    gw.ib.add("b/1", 2, strategy="b")
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("qa", 10, strategy="a")
    gw.queue_unsent("qb", 11, strategy="b")
    report = asyncio.run(gw.switch.kill(kill("k-a", scope="strategy:a")))
    assert report.confirmed and report.scope == "strategy:a" and report.cancelled == 1
    assert gw.ib.count("global") == 0 and ("cancel", 1) in gw.ib.calls and ("cancel", 2) not in gw.ib.calls
    assert gw.ib.working() == ["b/1"] and gw.sender.queued == 1
    assert gw.latch.halted_scopes() == ["strategy:a"] and [h.scope for h in gw.saved().halted] == ["strategy:a"]


def test_one_kill_id_latches_once_and_sweeps_once(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def twice() -> tuple[Any, Any]:
        return await asyncio.gather(gw.switch.kill(kill("k-dup")), gw.switch.kill(kill("k-dup")))

    first, second = asyncio.run(twice())
    assert first == second and gw.latch.epoch == 1 and gw.ib.count("global") == 1
    assert len(gw.outbox.kills) == 1


def test_emergency_cancel_sweeps_without_halting_and_answers_once_per_id(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("q", 10)
    cmd = EmergencyCancel(command_id="e1", scope="all", reason="breaker")  # type: ignore[arg-type]

    async def run() -> tuple[Any, Any]:
        first = await gw.switch.emergency(cmd)
        return first, await gw.switch.emergency(cmd)

    report, again = asyncio.run(run())
    assert report == again and gw.ib.count("global") == 1
    assert report.confirmed and report.trading_state == "ACTIVE" and report.epoch == 0 and report.cancelled >= 1
    assert report.command_id == "e1" and "1 unsent order message(s) dropped" in report.detail
    assert gw.latch.halted_scopes() == [] and not gw.path.exists()  # nothing latched, nothing written


def test_emergency_cancel_while_disconnected_or_unconfirmed_says_so(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, timeout_s=0.3)
    gw.ib.add("s1/stuck", 1, stuck=True)
    gw.connected = False
    off = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e-off", scope="all", reason="r")))
    assert not off.confirmed and off.detail == "disconnected from IB: nothing could be cancelled"
    assert off.remaining == 1 and off.trading_state == "ACTIVE" and gw.ib.calls == []
    gw.connected = True
    gw.latch.latch("all", reason="earlier kill")
    stuck = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e2", scope="all", reason="r")))
    assert not stuck.confirmed and stuck.remaining_order_refs == ["s1/stuck"] and stuck.trading_state == "HALTED"
    (severity, message, detail), = gw.outbox.alerts
    assert severity == "critical" and message.startswith("emergency cancel e2") and detail == {"remaining": "s1/stuck"}


def test_cancel_scope_sweeps_the_scope_under_its_request_id(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1, symbol="AAPL")
    gw.ib.add("s1/m", 2, symbol="MSFT")
    req = CancelScope(scope="symbol:MSFT", reason="tidy")  # type: ignore[arg-type]
    report = asyncio.run(gw.switch.cancel_scope(req, "req-9"))
    assert report.command_id == "cancel-scope:req-9" and report.confirmed and report.cancelled == 1
    assert gw.ib.working() == ["s1/a"] and report.trading_state == "ACTIVE"
    anonymous = asyncio.run(gw.switch.cancel_scope(req, ""))
    assert anonymous.command_id.startswith("cancel-scope:") and anonymous.command_id != "cancel-scope:"


def test_resume_releases_clears_its_pending_sweeps_and_persists_before_announcing(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)
    gw.connected = False
    asyncio.run(gw.switch.kill(kill("k-a", scope="strategy:a")))
    asyncio.run(gw.switch.kill(kill("k-all")))
    assert sorted(p.command_id for p in gw.saved().pending) == ["k-a", "k-all"]
    partial = gw.switch.resume(Resume(scope="strategy:a", reason="ok", origin="op"))  # type: ignore[arg-type]
    assert partial.trading_state == "HALTED" and partial.detail == "released strategy:a"  # all still latched
    assert [p.command_id for p in gw.saved().pending] == ["k-all"] and partial.epoch == 3
    assert partial.command_id == "resume:3" and partial.confirmed and partial.cancelled == 0
    report = gw.switch.resume(Resume(scope="all", reason="ok", origin="op"))  # type: ignore[arg-type]
    assert report.trading_state == "ACTIVE" and report.epoch == 4 and report.detail == "released all"
    state = gw.saved()
    assert state.halted == [] and state.pending == [] and state.epoch == 4
    nothing = gw.switch.resume(Resume(scope="all", reason="again", origin="op"))  # type: ignore[arg-type]
    assert nothing.detail == "all was not halted" and nothing.epoch == 4 and nothing.trading_state == "ACTIVE"


def test_announce_keeps_a_readable_latch_and_an_unreadable_file_starts_halted(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.latch.latch("strategy:a", reason="r1", origin="cli")
    gw.latch.latch("all", reason="r2", origin="risk")
    gw.switch.announce(state_problem="", origin="gateway")
    assert gw.latch.halted_scopes() == ["all", "strategy:a"] and gw.latch.epoch == 2
    assert gw.outbox.alerts == [] and not gw.path.exists()  # nothing to repair: nothing written
    bad = Gateway(tmp_path / "bad")
    bad.path.parent.mkdir(parents=True)
    bad.path.write_text("{not json")
    bad.switch.announce(state_problem="bad json", origin="gateway")
    assert bad.latch.globally_halted and "state file unreadable: bad json" in bad.latch.scopes["all"].reason
    assert [a[0] for a in bad.outbox.alerts] == ["critical"] and "bad json" in bad.outbox.alerts[0][1]
    kept = [p.name for p in bad.path.parent.iterdir() if p.name.startswith("gateway.json.corrupt-")]
    assert len(kept) == 1 and (bad.path.parent / kept[0]).read_text() == "{not json"
    assert [h.scope for h in bad.saved().halted] == ["all"]  # the HALT is on disk again


def test_a_halt_that_cannot_be_written_alerts_and_holds_in_memory(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.path.mkdir(parents=True)  # a directory where the file should be: every write fails
    gw.latch.latch("all", reason="kill")
    assert gw.halts.persist() is False
    (severity, message, _), = gw.outbox.alerts
    assert severity == "critical" and "latch holds in memory only" in message
    assert gw.latch.globally_halted
    gw2 = Gateway(tmp_path / "ok")
    assert gw2.halts.persist() is True and gw2.outbox.alerts == []
    gw2.halts.quarantine_state_file()
    assert not gw2.path.exists() and len(list(gw2.path.parent.iterdir())) == 1
    gw3 = Gateway(tmp_path / "none")
    gw3.halts.quarantine_state_file()  # nothing to move: no error
    assert not gw3.path.parent.exists()


def test_command_memory_runs_once_per_id_forgets_failures_and_stays_bounded() -> None:
    async def scenario() -> None:
        memory: CommandMemory[int] = CommandMemory(size=2)
        runs: list[str] = []

        async def run(name: str, value: int) -> int:
            runs.append(name)
            await asyncio.sleep(0)
            return value

        assert await asyncio.gather(memory.once("a", lambda: run("a", 1)), memory.once("a", lambda: run("a2", 2))) \
            == [1, 1]
        assert runs == ["a"]

        async def boom() -> int:
            runs.append("boom")
            raise RuntimeError("failed")

        with pytest.raises(RuntimeError):
            await memory.once("b", boom)
        assert await memory.once("b", lambda: run("b", 3)) == 3  # a failure is forgotten: the retry runs
        await memory.once("c", lambda: run("c", 4))
        assert await memory.once("a", lambda: run("a3", 5)) == 5  # "a" fell out of the memory (size 2)
        assert runs == ["a", "boom", "b", "c", "a3"]

    asyncio.run(scenario())
    assert CommandMemory().size == COMMAND_MEMORY


# -- the sweep ------------------------------------------------------------------------------------------------


def test_sweep_all_cancels_globally_then_by_id_what_ib_still_lists(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/sticky", 2, sticky=True)
    before = time.monotonic()
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert result.confirmed and result.remaining == [] and result.cancelled == 2
    assert (result.global_cancels, result.individual_cancels, result.rounds) == (1, 1, 2)
    assert result.verified_mono >= before and result.elapsed_ms >= 0 and result.detail == ""
    assert gw.ib.calls[:3] == [("global", 0), ("list", 0), ("cancel", 2)]


def test_sweep_of_a_scope_cancels_only_its_orders_and_never_globally(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1, symbol="AAPL")
    gw.ib.add("s1/m", 2, symbol="MSFT")
    gw.ib.add("ext", 3, symbol="MSFT", client_id=99)  # another client's: not ours to cancel by id
    result = asyncio.run(gw.sweeper.sweep("symbol:AAPL", use_global=False, timeout_s=1.0))
    assert result.confirmed and result.cancelled == 1 and result.global_cancels == 0
    assert result.individual_cancels == 1 and gw.ib.working() == ["ext", "s1/m"]
    other = asyncio.run(gw.sweeper.sweep("symbol:MSFT", use_global=False, timeout_s=0.4))
    assert not other.confirmed and other.remaining == ["ext"] and other.global_cancels == 0


def test_sweep_all_ends_another_clients_orders_with_one_more_global_cancel(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("ext", 3, client_id=99, sticky=True)  # survives the first global cancel
    gw.ib.add("s1/a", 1)

    def unstick() -> None:
        if gw.ib.count("global") == 2:
            gw.ib.sticky.clear()

    gw.ib.on_global = unstick
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert result.confirmed and result.global_cancels == 2 and result.individual_cancels == 0
    assert result.cancelled == 2  # ours by its status, the other client's because it left IB's list


def test_sweep_gives_up_at_its_deadline_and_resends_a_cancel_no_more_than_once_a_second(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=CANCEL_RESEND_S * 1.5))
    assert not result.confirmed and result.remaining == ["s1/stuck"] and result.cancelled == 0
    assert result.individual_cancels == 2 and gw.ib.count("cancel") == 2  # at once, and once more after 1 s
    assert result.verified_mono == 0.0 and result.rounds >= 3


def test_sweep_reports_a_failed_list_and_what_it_knew_to_work(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)
    gw.ib.list_error = ConnectionError("socket closed")
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=1.0))
    assert not result.confirmed and result.remaining == ["s1/stuck"] and "could not list open orders" in result.detail
    assert "socket closed" in result.detail and result.rounds == 1


def test_a_slow_list_past_the_deadline_ends_the_sweep_unconfirmed(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)
    gw.ib.list_error = TimeoutError()
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=0.2))
    assert not result.confirmed and result.remaining == ["s1/stuck"] and "timed out" in result.detail
    assert result.rounds >= 2 and gw.ib.count("cancel") >= 1  # re-cancelled what it knew while retrying


def test_reverify_carries_the_counts_on_without_a_new_global_cancel(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    first = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=1.0))
    again = asyncio.run(gw.sweeper.reverify(first, use_global=True, timeout_s=1.0))
    assert again.confirmed and again.global_cancels == 1 and gw.ib.count("global") == 1
    assert again.cancelled == first.cancelled == 1 and again.rounds == first.rounds + 1
    assert again.verified_mono > first.verified_mono and again.elapsed_ms >= first.elapsed_ms


def test_cancel_one_only_for_this_clients_live_trades(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.ib.add("ext", 3, client_id=99)
    mine, theirs = gw.table.get("s1/a"), gw.table.get("ext")
    assert gw.sweeper.cancel_one(mine) is True and mine.cancel_sent_mono > 0
    assert gw.sweeper.cancel_one(theirs) is False and theirs.cancel_sent_mono == 0.0
    mine.trade = None
    assert gw.sweeper.cancel_one(mine) is False


def test_registry_shares_a_running_sweep_and_counts(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> list[SweepResult]:
        return list(await asyncio.gather(gw.sweeps.run("c1", "all"), gw.sweeps.run("c1", "all")))

    a, b = asyncio.run(scenario())
    assert a is b and gw.sweeps.sweeps_started == 1 and gw.sweeps.sweeps_joined == 1


def test_unsent_orders_drop_only_what_matches_and_leave_amendments_of_live_orders_silent(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("new", 10)
    live = gw.ib.add("s1/live", 11)
    gw.sender.submit(place_msg(11))  # an amendment of a transmitted order
    gw.sender.submit(place_msg(12))  # an order id the table does not know
    gw.sender.submit("6\0some request")  # not a placeOrder
    rec_new = gw.table.get("s1/new")
    assert gw.unsent.drop(only=gw.table.get("s1/live")) == 1  # just the live order's amendment
    assert gw.outbox.statuses == []  # dropped silently: the order itself is the sweep's to cancel
    assert gw.sender.queued == 3
    assert gw.unsent.drop("symbol:MSFT") == 1  # the unknown id goes with any scope; "new" is AAPL
    assert gw.unsent.drop("strategy:s1") == 1 and gw.sender.queued == 1  # the request stays
    assert rec_new.status == "Cancelled" and rec_new.trade.orderStatus.status == "Cancelled"
    assert live.orderStatus.status == "Submitted"
    assert gw.unsent.drop() == 0


# -- the order table ------------------------------------------------------------------------------------------

from actors.gateway.events import IbEventRouter, OrderEventTranslator  # noqa: E402
from actors.gateway.ordertable import (  # noqa: E402
    CANCELLED, ERROR_ATTACH_WINDOW_S, ChangeSignal, IbOrderRecord, interpret,
)


def ib_trade(oid: int = 1, *, perm: int = 0, ref: str = "s1/a", client: int = CLIENT, symbol: str = "AAPL",
             status: str = "Submitted", qty: float = 10.0) -> Trade:
    lmt = LimitOrder("BUY", qty, 100.0, orderRef=ref, orderId=oid, clientId=client, permId=perm)
    return Trade(contract=Stock(symbol, "SMART", "USD"), order=lmt, orderStatus=OrderStatus(status=status))


def observe(table: IbOrderTable, rec: IbOrderRecord, status: str, **kw: Any) -> Any:
    args: dict[str, Any] = dict(filled=0.0, remaining=10.0, avg_fill_price=0.0)
    args.update(kw)
    return table.observe(rec, status=status, **args)


def test_observe_publishes_each_change_once_with_ibs_figures() -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(4, perm=77), CLIENT)
    assert (rec.status, rec.remaining, rec.ib_order_id, rec.client_id, rec.transmitted) == (
        "PendingSubmit", 10.0, 4, CLIENT, False)
    version = table.changed.version
    ev = observe(table, rec, "Submitted", filled=4.0, remaining=6.0, avg_fill_price=100.5, last_fill_price=100.25,
                 replayed=True)
    assert table.changed.version == version + 1
    assert (ev.order_ref, ev.strategy_id, ev.client_order_id, ev.ib_order_id, ev.symbol) == (
        "s1/a", "s1", "a", 4, "AAPL")
    assert (ev.status, ev.filled, ev.remaining, ev.avg_fill_price, ev.last_fill_price) == (
        "Submitted", 4.0, 6.0, 100.5, 100.25)
    assert ev.is_live and not ev.is_done and ev.replayed and ev.error_code is None and ev.reason == ""
    assert (rec.filled, rec.remaining, rec.avg_fill_price, rec.last_fill_price) == (4.0, 6.0, 100.5, 100.25)
    assert rec.history == ["Submitted"] and rec.done_mono is None
    assert observe(table, rec, "Submitted", filled=4.0, remaining=6.0) is None  # the same again: nothing
    assert table.changed.version == version + 1
    forced = observe(table, rec, "Submitted", filled=4.0, remaining=6.0, force=True, reason="Modified")
    assert forced is not None and forced.reason == "Modified" and rec.history == ["Submitted", "Submitted"]
    more = observe(table, rec, "Submitted", filled=5.0, remaining=5.0)
    assert more is not None and more.filled == 5.0 and not more.replayed
    done = observe(table, rec, "Filled", filled=10.0, remaining=0.0, avg_fill_price=100.0)
    assert done.is_done and not done.is_live and rec.is_done and not rec.is_working and rec.done_mono is not None


def test_a_done_order_stays_done_except_for_ibs_fill_after_a_cancel() -> None:
    table = IbOrderTable()
    for cancelled in sorted(CANCELLED):
        rec = placed(table, order_spec(cancelled), ib_trade(len(table) + 1), CLIENT)
        observe(table, rec, cancelled)
        first_done = rec.done_mono
        for later in ("Submitted", "PreSubmitted", "PendingCancel", "Inactive"):
            assert observe(table, rec, later) is None and rec.status == cancelled
        ev = observe(table, rec, "Filled", filled=10.0, remaining=0.0, avg_fill_price=1.0)
        assert ev is not None and ev.status == "Filled" and rec.status == "Filled"
        assert rec.done_mono == first_done  # done since the cancel
        assert observe(table, rec, "Cancelled") is None and observe(table, rec, "ApiCancelled") is None
    filled = placed(table, order_spec("f"), ib_trade(9), CLIENT)
    observe(table, filled, "Filled", filled=10.0, remaining=0.0)
    assert observe(table, filled, "Cancelled") is None and filled.status == "Filled"


def test_an_error_seen_before_its_status_is_attached_to_the_next_event_within_the_window(monkeypatch) -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(1), CLIENT)
    rec.pending_error = (202, "Order Canceled - reason:", time.monotonic())
    ev = observe(table, rec, "Cancelled")
    assert (ev.error_code, ev.reason) == (202, "Order Canceled - reason:") and rec.pending_error is None
    other = placed(table, order_spec("b"), ib_trade(2), CLIENT)
    other.pending_error = (202, "late", time.monotonic() - ERROR_ATTACH_WINDOW_S - 0.5)
    ev = observe(table, other, "Cancelled")
    assert ev.error_code is None and ev.reason == ""  # too old: not this status's cause
    third = placed(table, order_spec("c"), ib_trade(3), CLIENT)
    third.pending_error = (202, "theirs", time.monotonic())
    ev = observe(table, third, "Cancelled", error_code=201, reason="own")
    assert (ev.error_code, ev.reason) == (201, "own")  # the event's own error wins
    fourth = placed(table, order_spec("d"), ib_trade(4), CLIENT)
    fourth.pending_error = (202, "kept reason", time.monotonic())
    ev = observe(table, fourth, "Cancelled", reason="own reason")
    assert (ev.error_code, ev.reason) == (202, "own reason")


def test_records_are_found_by_perm_id_then_client_and_order_id_then_order_ref() -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(4), CLIENT)
    assert table.find(ib_trade(4, ref="")) is rec  # by (clientId, orderId)
    assert table.find(ib_trade(4, client=CLIENT + 1, ref="")) is None
    assert table.find(ib_trade(0, ref="s1/a")) is rec  # by orderRef
    assert table.find(ib_trade(0, ref="")) is None
    again, created = table.attach(ib_trade(4, perm=99))
    assert again is rec and not created and rec.perm_id == 99 and table.by_perm[99] is rec
    assert table.find(ib_trade(0, perm=99, ref="", client=0)) is rec  # by permId first
    assert table.find_by_order_id(CLIENT, 4) is rec and table.find_by_order_id(CLIENT, 5) is None
    assert table.get("s1/a") is rec and table.get("nope") is None and len(table) == 1 and table.records() == [rec]
    kept, _ = table.attach(ib_trade(0, perm=0, ref="s1/a", client=0))  # a report without ids keeps the ids
    assert kept is rec and (rec.ib_order_id, rec.client_id, rec.perm_id) == (4, CLIENT, 99)
    table.mark_transmitted(CLIENT, 4)
    table.mark_transmitted(CLIENT, 5)  # unknown: nothing
    assert rec.transmitted


def test_an_external_order_is_filed_by_id_until_its_perm_id_arrives_then_by_perm_id() -> None:
    table = IbOrderTable()
    ext, created = table.attach(ib_trade(5, ref="", client=0, symbol="MSFT", qty=30))
    assert created and ext.key == "id:0:5" and ext.strategy_id == "external" and not ext.is_khazad
    assert (ext.status, ext.remaining, ext.symbol) == ("", 30.0, "MSFT")
    assert list(table.by_key) == ["id:0:5"]
    same, created = table.attach(ib_trade(5, perm=123, ref="", client=0, symbol="MSFT"))
    assert same is ext and not created and ext.key == "perm:123" and list(table.by_key) == ["perm:123"]
    assert ext.label() == "perm:123 (orderId 5, permId 123)"
    nosym, _ = table.attach(ib_trade(6, ref="", client=0, symbol=""))
    assert nosym.symbol == ""
    table.attach(ib_trade(6, ref="", client=0, symbol="SPY"))
    assert nosym.symbol == "SPY"  # filled in once known
    mine = placed(table, order_spec("k"), ib_trade(7), CLIENT)
    assert mine.is_khazad and mine.key == "s1/k" and mine.in_scope("strategy:s1") and not mine.in_scope("symbol:MSFT")
    assert [r.key for r in table.working("symbol:MSFT")] == ["perm:123"]
    observe(table, ext, "Cancelled")
    assert [r.key for r in table.working("symbol:MSFT")] == [] and len(table.working()) == 2


def test_change_signal_wakes_every_waiter_and_times_out_otherwise() -> None:
    async def scenario() -> None:
        signal = ChangeSignal()
        assert await signal.wait(0) is False and await signal.wait(0.01) is False
        waiters = [asyncio.ensure_future(signal.wait(5)) for _ in range(2)]
        await asyncio.sleep(0)
        signal.notify()
        assert await asyncio.gather(*waiters) == [True, True] and signal.version == 1
        signal.notify()
        assert signal.version == 2

    asyncio.run(scenario())


def test_interpretation_of_ibs_statuses() -> None:
    assert interpret("Submitted") == (True, False) and interpret("PreSubmitted") == (True, False)
    assert interpret("ApiCancelled") == (False, True) and interpret("Filled") == (False, True)
    assert TERMINAL == {"Filled", "Cancelled", "ApiCancelled"} and CANCELLED == {"Cancelled", "ApiCancelled"}


# -- order events ----------------------------------------------------------------------------------------------


class FakeSystem:
    def __init__(self) -> None:
        self.codes: list[tuple[int, str]] = []
        self.disconnects = 0

    def on_system_code(self, code: int, message: str) -> None:
        self.codes.append((code, message))

    def on_disconnected(self) -> None:
        self.disconnects += 1


# -- the state file and the exec journal, exactly -------------------------------------------------------------

import msgspec  # noqa: E402

from actors.gateway import persist as gp  # noqa: E402


def test_state_file_versions_and_corruption_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    store = StateStore(path)
    assert store.load() == GatewayState() and GatewayState().version == gp.STATE_VERSION == 1
    path.write_bytes(msgspec.json.encode(GatewayState(version=2)))
    with pytest.raises(gp.StateCorrupt, match="gateway.json: state version 2, expected 1"):
        store.load()
    path.write_text('{"epoch": "x"}')
    with pytest.raises(gp.StateCorrupt, match="gateway.json: "):
        store.load()
    path.write_text("not json")
    with pytest.raises(gp.StateCorrupt):
        store.load()
    before = time.time_ns()
    store.save(GatewayState(epoch=3))
    saved = store.load()
    assert saved.epoch == 3 and saved.updated_wall_ns >= before and path.read_bytes().endswith(b"}\n")
    gp.fsync_dir(tmp_path / "missing")  # a folder that is gone: nothing to sync, no error
    assert gp.journal_path(tmp_path / "gateway.json") == tmp_path / "gateway.execs.jsonl"


def test_exec_journal_lines_are_written_at_once_and_fsynced_in_batches(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "j" / "gateway.execs.jsonl"
    j = gp.ExecJournal(path)
    j.load()
    assert not j.dirty and not path.exists()
    seen = spy_on_disk(monkeypatch)
    j.record(gp.FILL, "e1.01")
    j.record(gp.COMMISSION, "e1.01")
    j.record(gp.PLACED, "s1/a")
    assert j.dirty and seen.ops == []  # written (a killed process loses nothing), not yet fsynced
    lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    assert [(x["k"], x["id"]) for x in lines] == [("f", "e1.01"), ("c", "e1.01"), ("o", "s1/a")]
    assert j.has_fill("e1.01") and j.has_commission("e1.01") and j.has_placed("s1/a")
    assert not j.has_fill("e2.01") and not j.has_commission("e2.01") and not j.has_placed("s1/b")
    j.flush()
    assert [op for op, _, _ in seen.ops] == ["fsync"] and not j.dirty
    j.flush()  # nothing new: no fsync
    assert len(seen.ops) == 1
    j.close()
    assert len(seen.ops) == 1  # closing a synced journal needs no fsync
    k = gp.ExecJournal(path)
    k.load()
    k.record(gp.FILL, "e2.01")
    k.close()
    assert len(seen.ops) == 2  # closing with unsynced lines fsyncs them
    m = gp.ExecJournal(path)
    m.load()
    assert set(m.fills) == {"e1.01", "e2.01"} and set(m.commissions) == {"e1.01"} and set(m.placed) == {"s1/a"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_exec_journal_prunes_old_lines_and_compacts_after_many_or_a_torn_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gateway.execs.jsonl"
    old_t = time.time_ns() - int((gp.EXEC_RETENTION_S + 60) * 1e9)
    new_t = time.time_ns()
    enc = msgspec.json.Encoder()
    monkeypatch.setattr(gp, "COMPACT_MIN_PRUNED", 3)
    rows = [{"k": "f", "id": f"old{i}", "t": old_t} for i in range(2)] + [{"k": "f", "id": "new", "t": new_t},
                                                                          {"k": "x", "id": "odd", "t": new_t}]
    path.write_bytes(b"".join(enc.encode(r) + b"\n" for r in rows) + b"\n")
    j = gp.ExecJournal(path)
    j.load()
    assert set(j.fills) == {"new"} and j.fills["new"] == new_t
    assert len(path.read_bytes().splitlines()) == 5  # 2 pruned < 3: the file is left as it is
    rows.append({"k": "f", "id": "old9", "t": old_t})
    path.write_bytes(b"".join(enc.encode(r) + b"\n" for r in rows))
    j.load()
    assert [msgspec.json.decode(x)["id"] for x in path.read_bytes().splitlines()] == ["new"]  # compacted
    path.write_bytes(enc.encode({"k": "f", "id": "kept", "t": new_t}) + b"\n" + b'{"k":"f","id":"to')
    j.load()
    assert set(j.fills) == {"kept"}
    assert path.read_bytes() == enc.encode({"k": "f", "id": "kept", "t": new_t}) + b"\n"  # the torn line is gone
    assert gp.ExecJournal(path).retention_s == gp.EXEC_RETENTION_S == 8 * 24 * 3600


# -- the kill switch and the sweeps: every field and count -----------------------------------------------------

import re  # noqa: E402

from actors.gateway import cancels as gc  # noqa: E402
from actors.gateway.cancels import LIST_TIMEOUT_S  # noqa: E402


def test_a_kill_writes_every_field_of_its_latch_and_pending_sweep(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.connected = False
    before = time.time_ns()
    report = asyncio.run(gw.switch.kill(kill("k-off")))
    assert report.command_id == "k-off" and report.confirmed is False and report.elapsed_ms == 0.0
    assert report.detail == ("disconnected from IB: HALTED is latched; the cancel sweep runs when the connection is "
                             "back")
    state = gw.saved()
    (halt,) = state.halted
    assert (halt.scope, halt.epoch, halt.reason, halt.origin, halt.kill_id) == ("all", 1, "test kill", "test", "k-off")
    (pending,) = state.pending
    assert (pending.command_id, pending.scope, pending.kind, pending.reason) == ("k-off", "all", "kill", "test kill")
    assert pending.wall_ns >= before and halt.wall_ns >= before
    gw2 = Gateway(tmp_path / "2")
    gw2.ib.add("s1/a", 1)
    done = asyncio.run(gw2.switch.kill(kill("k-on")))
    assert done.confirmed is True and done.detail == "" and done.elapsed_ms > 0.0


def test_a_kill_and_an_emergency_cancel_carrying_its_id_share_one_sweep(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def kill_first() -> None:
        await gw.switch.kill(kill("k1"))
        await gw.switch.emergency(EmergencyCancel(command_id="k1", scope="all", reason="risk"))

    asyncio.run(kill_first())
    assert gw.ib.count("global") == 1 and (gw.sweeps.sweeps_started, gw.sweeps.sweeps_joined) == (1, 1)
    # the other way round: the emergency cancel confirmed before the kill latched, so the kill verifies once more
    gw2 = Gateway(tmp_path / "2")
    gw2.ib.add("s1/a", 1)

    async def emergency_first() -> None:
        await gw2.switch.emergency(EmergencyCancel(command_id="k2", scope="all", reason="risk"))
        lists = gw2.ib.count("list")
        report = await gw2.switch.kill(kill("k2"))
        assert report.confirmed and gw2.ib.count("list") == lists + 1 and gw2.ib.count("global") == 1

    asyncio.run(emergency_first())
    assert (gw2.sweeps.sweeps_started, gw2.sweeps.sweeps_joined) == (1, 1)


def test_after_a_reconnect_an_unconfirmed_kill_is_verified_again_even_if_its_id_confirmed_before(
        tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> None:
        await gw.switch.emergency(EmergencyCancel(command_id="k3", scope="all", reason="risk"))
        gw.connected = False
        await gw.switch.kill(kill("k3"))
        gw.connected = True
        lists = gw.ib.count("list")
        await gw.switch.finish_pending("reconnect")
        assert gw.ib.count("list") == lists + 1  # a confirmation from before the gap does not count
        assert gw.saved().pending == []

    asyncio.run(scenario())


def test_alerts_and_reports_list_what_still_works(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, timeout_s=0.2)
    for i in range(51):
        gw.ib.add(f"s1/z{i:02d}", 100 + i, stuck=True)
    refs = sorted(f"s1/z{i:02d}" for i in range(51))
    report = asyncio.run(gw.switch.kill(kill("k-51")))
    assert report.remaining == 51 and report.remaining_order_refs == refs
    assert gw.outbox.alerts[-1][2] == {"remaining": ",".join(refs[:50])}
    asyncio.run(gw.switch.finish_pending("reconnect"))
    assert gw.outbox.alerts[-1][0] == "critical" and gw.outbox.alerts[-1][2] == {"remaining": ",".join(refs[:50])}
    asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e-51", scope="all", reason="r")))
    assert gw.outbox.alerts[-1][2] == {"remaining": ",".join(refs[:50])}
    asyncio.run(gw.switch.cancel_scope(CancelScope(scope="strategy:s1", reason="tidy"), "r1"))
    assert gw.outbox.alerts[-1][1].startswith("cancel scope cancel-scope:r1: 51 order(s) still working")


def test_an_emergency_cancel_keeps_to_its_scope_and_reports_its_state_and_epoch(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("qa", 10, strategy="a")
    gw.queue_unsent("qb", 11, strategy="b")
    gw.latch.latch("strategy:a", reason="earlier")
    gw.connected = False
    report = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e-a", scope="strategy:a", reason="r")))
    assert (report.trading_state, report.epoch, report.command_id, report.scope) == ("HALTED", 1, "e-a",
                                                                                     "strategy:a")
    assert gw.sender.queued == 1 and gw.table.get("b/qb").status == "PendingSubmit"
    gw.connected = True
    ok = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e-b", scope="strategy:b", reason="r")))
    assert (ok.trading_state, ok.epoch, ok.detail) == ("ACTIVE", 1, "1 unsent order message(s) dropped")


def test_resume_of_several_scopes_reports_each_released_one(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.latch.latch("strategy:a", reason="r")
    gw.latch.latch("symbol:X", reason="r")
    report = gw.switch.resume(Resume(scope="all", reason="ok", origin="op"))  # type: ignore[arg-type]
    assert report.detail == "released strategy:a, symbol:X" and (report.remaining, report.cancelled) == (0, 0)
    assert gw.latch.halted_scopes() == [] and gw.saved().halted == []


def test_an_unreadable_state_file_is_kept_under_a_dated_name_and_the_latch_names_its_origin(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.path.parent.mkdir(parents=True)
    gw.path.write_text("{")
    gw.switch.announce(state_problem="bad", origin="gateway-1")
    assert gw.latch.scopes["all"].origin == "gateway-1"
    (kept,) = [p.name for p in gw.path.parent.iterdir() if p.name != "gateway.json"]
    assert re.fullmatch(r"gateway\.json\.corrupt-\d{8}-\d{6}", kept), kept


def test_command_memory_forgets_the_oldest_beyond_its_size_and_survives_an_eviction_mid_failure() -> None:
    async def scenario() -> None:
        memory: CommandMemory[int] = CommandMemory(size=2)
        runs: list[str] = []

        async def run(name: str) -> int:
            runs.append(name)
            return len(runs)

        await memory.once("a", lambda: run("a"))
        await memory.once("b", lambda: run("b"))
        await memory.once("a", lambda: run("a-again"))  # both fit: "a" is remembered
        assert runs == ["a", "b"]
        await memory.once("c", lambda: run("c"))  # "a" (the oldest) goes
        await memory.once("b", lambda: run("b-again"))
        await memory.once("a", lambda: run("a-again"))
        assert runs == ["a", "b", "c", "a-again"]
        tiny: CommandMemory[int] = CommandMemory(size=1)
        release = asyncio.Event()

        async def fail_later() -> int:
            await release.wait()
            raise RuntimeError("sweep failed")

        failing = asyncio.ensure_future(tiny.once("x", fail_later))
        await asyncio.sleep(0)
        await tiny.once("y", lambda: run("y"))  # evicts "x" while it runs
        release.set()
        with pytest.raises(RuntimeError, match="sweep failed"):
            await failing

    asyncio.run(scenario())


def test_a_scoped_sweep_waits_for_ibs_reports_instead_of_asking_again(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.delay = 0.05  # IB confirms each cancel 50 ms later
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/b", 2)
    result = asyncio.run(gw.sweeper.sweep("strategy:s1", use_global=False, timeout_s=0.8))
    assert result.confirmed and (result.rounds, result.individual_cancels, result.cancelled) == (1, 2, 2)
    assert gw.ib.count("list") == 1 and gw.ib.count("cancel") == 2


def test_the_list_request_gets_the_time_the_deadline_leaves(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=30.0))
    assert gw.ib.list_timeouts == [LIST_TIMEOUT_S]
    short = Gateway(tmp_path / "2")
    short.ib.add("s1/a", 1)
    asyncio.run(short.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert len(short.ib.list_timeouts) == 1 and 1.5 < short.ib.list_timeouts[0] <= 2.0
    late = Gateway(tmp_path / "3")
    late.ib.add("s1/stuck", 1, stuck=True)
    late.ib.list_error = TimeoutError()
    asyncio.run(late.sweeper.sweep("all", use_global=True, timeout_s=0.05))
    assert late.ib.list_timeouts[0] == 0.1  # never less than 0.1 s, even with the deadline this close


def test_a_timed_out_list_still_ends_other_clients_orders_with_a_global_cancel(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("ext", 3, client_id=99, sticky=True)
    gw.ib.list_error = TimeoutError()
    gw.ib.list_errors_left = 1

    def unstick() -> None:
        if gw.ib.count("global") == 2:
            gw.ib.sticky.clear()

    gw.ib.on_global = unstick
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert result.confirmed and result.global_cancels == 2 and "timed out" in result.detail


def test_a_listed_order_out_of_scope_never_hides_one_in_scope(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1, symbol="AAPL")  # listed first, out of scope
    gw.ib.add("s1/m", 2, symbol="MSFT", stuck=True)
    result = asyncio.run(gw.sweeper.sweep("symbol:MSFT", use_global=False, timeout_s=0.3))
    assert not result.confirmed and result.remaining == ["s1/m"]


def test_orders_first_seen_in_ibs_list_are_swept_and_counted(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("ext1", 3, client_id=98, sticky=True, known=False)
    gw.ib.add("ext2", 4, client_id=99, sticky=True, known=False)
    gw.ib.add("s1/f", 1)
    gw.ib.fills_instead.add(1)  # this one fills while the kill runs: not counted as cancelled

    def unstick() -> None:
        if gw.ib.count("global") == 2:
            gw.ib.sticky.clear()

    gw.ib.on_global = unstick
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert result.confirmed and result.cancelled == 2 and result.global_cancels == 2
    assert sorted(r.key for r in gw.table.records()) == ["ext1", "ext2", "s1/f"]


def test_elapsed_time_is_reported_in_milliseconds(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)
    t0 = time.monotonic()
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=0.25))
    took_ms = (time.monotonic() - t0) * 1000.0
    assert 240.0 <= result.elapsed_ms <= took_ms


def test_reverify_keeps_scope_counts_and_time_and_waits_for_ib(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1, strategy="a")
    gw.ib.add("s1/b", 2, strategy="a", stuck=True)
    first = asyncio.run(gw.sweeper.sweep("strategy:a", use_global=False, timeout_s=0.3))
    assert not first.confirmed and first.individual_cancels == 2
    gw.ib.stuck.clear()
    gw.ib.delay = 0.05
    gw.table.get("a/b").cancel_sent_mono = 0.0  # long ago: may be re-sent

    async def again() -> SweepResult:
        return await gw.sweeper.reverify(first, use_global=False, timeout_s=1.0)

    second = asyncio.run(again())
    assert second.confirmed and second.scope == "strategy:a" and second.individual_cancels == 3
    assert second.elapsed_ms > first.elapsed_ms and second.cancelled == first.cancelled + 1
    gw3 = Gateway(tmp_path / "3")
    gw3.ib.add("s1/a", 1)
    done = asyncio.run(gw3.sweeper.sweep("all", use_global=True, timeout_s=1.0))
    gw3.ib.add("ext", 3, client_id=99, sticky=True, known=False)

    def unstick() -> None:
        gw3.ib.sticky.clear()

    gw3.ib.on_global = unstick
    again3 = asyncio.run(gw3.sweeper.reverify(done, use_global=True, timeout_s=1.0))
    assert again3.confirmed and again3.global_cancels == 2  # another client's order: one more global cancel


def test_the_registry_counts_forgets_the_oldest_and_sweeps_again_after_a_failure(tmp_path: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setattr(gc, "SWEEP_MEMORY", 2)
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> None:
        for cid in ("c1", "c2", "c1"):
            await gw.sweeps.run(cid, "all")
        assert (gw.sweeps.sweeps_started, gw.sweeps.sweeps_joined) == (2, 1)
        await gw.sweeps.run("c3", "all")  # "c1" is the oldest: forgotten
        await gw.sweeps.run("c2", "all")
        assert (gw.sweeps.sweeps_started, gw.sweeps.sweeps_joined) == (3, 2)
        await gw.sweeps.run("c1", "all")
        assert gw.sweeps.sweeps_started == 4
        gw.ib.list_error = RuntimeError("library bug")
        with pytest.raises(RuntimeError):
            await gw.sweeps.run("c9", "all")
        gw.ib.list_error = None
        assert (await gw.sweeps.run("c9", "all")).confirmed and gw.sweeps.sweeps_started == 6

    asyncio.run(scenario())


# -- the order table: partial library objects, float noise, re-keying ------------------------------------------

from types import SimpleNamespace  # noqa: E402


def test_a_library_object_missing_fields_gives_an_external_record_without_ids() -> None:
    table = IbOrderTable()
    bare = SimpleNamespace(order=SimpleNamespace(), contract=SimpleNamespace(), orderStatus=SimpleNamespace())
    assert table.find(bare) is None  # type: ignore[arg-type]
    rec, created = table.attach(bare)  # type: ignore[arg-type]
    assert created and (rec.order_ref, rec.strategy_id, rec.client_order_id, rec.symbol, rec.remaining) == (
        "", "external", "", "", 0.0)
    assert (rec.ib_order_id, rec.client_id, rec.perm_id, rec.key) == (0, 0, 0, "id:0:0")
    assert table.by_perm == {} and table.by_id == {}
    mine = placed(table, order_spec("a"), ib_trade(4, perm=40), CLIENT)
    assert mine.spec == order_spec("a") and mine.trade is not None
    same, created = table.attach(SimpleNamespace(order=SimpleNamespace(orderId=4, clientId=CLIENT),  # type: ignore
                                                 contract=SimpleNamespace(symbol="AAPL")))
    assert same is mine and not created and (mine.perm_id, mine.client_id) == (40, CLIENT)  # ids are kept


def test_float_noise_is_not_a_change_but_a_fractional_fill_is() -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(1), CLIENT)
    assert observe(table, rec, "Submitted", filled=4.0, remaining=6.0) is not None
    assert observe(table, rec, "Submitted", filled=4.0 + 1e-11, remaining=6.0 - 1e-11) is None
    assert observe(table, rec, "Submitted", filled=4.4, remaining=6.0) is not None
    assert observe(table, rec, "Submitted", filled=4.4, remaining=5.6) is not None


def test_a_library_warning_before_any_status_reads_as_submitted() -> None:
    table = IbOrderTable()
    rec, _ = table.attach(ib_trade(5, ref="", client=0))
    ev = table.observe(rec, status="ValidationError", filled=0.0, remaining=10.0, avg_fill_price=0.0, error_code=399)
    assert ev.status == "Submitted" and ev.last_fill_price == 0.0


def test_a_record_re_keyed_by_its_perm_id_leaves_nothing_under_its_old_key() -> None:
    table = IbOrderTable()
    ext, _ = table.attach(ib_trade(5, ref="", client=0))
    other, _ = table.attach(ib_trade(6, ref="", client=0))
    table.attach(ib_trade(5, perm=55, ref="", client=0))
    assert sorted(table.by_key) == ["id:0:6", "perm:55"] and table.by_key["id:0:6"] is other
    table._index(other)  # indexing again under the same key changes nothing
    assert sorted(table.by_key) == ["id:0:6", "perm:55"] and ext.indexed_key == "perm:55"


def test_change_signal_waits_up_to_its_timeout_and_leaves_no_waiter_behind() -> None:
    async def scenario() -> None:
        signal = ChangeSignal()
        waiter = asyncio.ensure_future(signal.wait(0.5))
        await asyncio.sleep(0.01)
        signal.notify()
        assert await waiter is True
        assert await signal.wait(0.02) is False and signal._waiters == set()

    asyncio.run(scenario())


# -- order events: every library event reaches its handler; every figure is IB's --------------------------------






def test_exec_journal_keeps_every_good_line_around_a_torn_one_and_its_times_through_a_compaction(
        tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "gateway.execs.jsonl"
    j = gp.ExecJournal(path)
    j.load()
    j.record(gp.FILL, "e1.01")  # the folders are made as needed
    j.close()
    assert not j.dirty
    j.record(gp.FILL, "e2.01")  # a closed journal opens again on the next record
    j.close()
    enc = msgspec.json.Encoder()
    now = time.time_ns()
    path.write_bytes(enc.encode({"k": "f", "id": "a", "t": now}) + b"\n\n" + b'{"k":"f","id":"tor\n'
                     + enc.encode({"k": "f", "id": "b", "t": now}) + b"\n")
    k = gp.ExecJournal(path)
    k.load()
    assert set(k.fills) == {"a", "b"}
    k.record(gp.PLACED, "s1/x")
    k.compact()
    m = gp.ExecJournal(path)
    m.load()
    assert set(m.fills) == {"a", "b"} and set(m.placed) == {"s1/x"} and m.fills["a"] == now


def test_every_queued_order_is_reported_even_after_an_amendment_in_the_queue(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.sender.submit("99\0warm-up")
    gw.ib.add("s1/live", 11)
    gw.sender.submit(place_msg(11))  # an amendment of a live order, queued first
    gw.queue_unsent("new", 10)
    assert gw.unsent.drop() == 2
    (ev,) = gw.outbox.statuses
    assert (ev.order_ref, ev.status, ev.filled, ev.remaining, ev.avg_fill_price, ev.is_done) == (
        "s1/new", "Cancelled", 0.0, 10.0, 0.0, True)
    assert ev.reason == "cancelled before it was transmitted to IB"


def test_an_emergency_cancel_after_a_finished_kill_joins_its_sweep(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> None:
        gw.connected = False
        await gw.switch.kill(kill("k-late"))
        gw.connected = True
        await gw.switch.finish_pending("reconnect")
        report = await gw.switch.emergency(EmergencyCancel(command_id="k-late", scope="all", reason="risk"))
        assert report.confirmed and report.detail == "" and gw.ib.count("global") == 1

    asyncio.run(scenario())


def test_an_emergency_cancel_in_a_halted_scope_reports_it_halted(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("a/1", 1, strategy="a")
    gw.latch.latch("strategy:a", reason="earlier")
    report = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e-h", scope="strategy:a", reason="r")))
    assert report.confirmed and report.trading_state == "HALTED" and report.detail == ""


def test_a_kill_joining_a_confirmed_sweep_still_ends_another_clients_new_order(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> None:
        await gw.switch.emergency(EmergencyCancel(command_id="k-x", scope="all", reason="risk"))
        gw.ib.add("ext", 7, client_id=99, sticky=True, known=False)  # placed by another client meanwhile

        def unstick() -> None:
            gw.ib.sticky.clear()

        gw.ib.on_global = unstick
        report = await gw.switch.kill(kill("k-x"))
        assert report.confirmed and gw.ib.count("global") == 2

    asyncio.run(scenario())


def test_each_timed_out_list_re_cancels_other_clients_orders_globally(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("ext", 3, client_id=99, sticky=True)
    gw.ib.list_error = TimeoutError()
    gw.ib.list_errors_left = 2

    def unstick() -> None:
        if gw.ib.count("global") == 2:
            gw.ib.sticky.clear()

    gw.ib.on_global = unstick
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=2.0))
    assert result.confirmed and result.global_cancels == 3


def test_a_table_that_never_stops_changing_does_not_stretch_the_deadline(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stuck", 1, stuck=True)

    async def scenario() -> float:
        stop = asyncio.Event()

        async def noise() -> None:  # other orders' reports keep arriving
            while not stop.is_set():
                gw.table.changed.notify()
                await asyncio.sleep(0.02)

        task = asyncio.ensure_future(noise())
        t0 = time.monotonic()
        result = await gw.sweeper.sweep("strategy:s1", use_global=False, timeout_s=0.3)
        took = time.monotonic() - t0
        stop.set()
        await task
        assert not result.confirmed
        return took

    assert asyncio.run(scenario()) < 1.5


def test_an_unknown_order_of_another_client_is_filed_under_that_client_and_its_order_ref() -> None:
    table = IbOrderTable()
    rec, created = table.attach(ib_trade(5, ref="", client=9, symbol="MSFT"))
    assert created and rec.client_id == 9 and rec.key == "id:9:5" and table.find_by_order_id(9, 5) is rec
    old, created = table.attach(ib_trade(6, ref="s2/x", client=CLIENT))  # ours, from before a restart
    assert created and (old.strategy_id, old.client_order_id, old.key) == ("s2", "x", "s2/x")


def test_a_bare_library_object_matches_no_record_whatever_the_table_holds() -> None:
    table = IbOrderTable()
    odd = IbOrderRecord(order_ref="XXXX", strategy_id="s", client_order_id="x", symbol="A", ib_order_id=1,
                        client_id=1, perm_id=1)
    table._index(odd)
    odd2 = IbOrderRecord(order_ref="", strategy_id="s", client_order_id="", symbol="A", ib_order_id=1, client_id=0)
    table._index(odd2)
    bare = SimpleNamespace(order=SimpleNamespace(), contract=SimpleNamespace())
    assert table.find(bare) is None  # type: ignore[arg-type]
    no_ref = SimpleNamespace(order=SimpleNamespace(orderRef=""), contract=SimpleNamespace())
    assert table.find(no_ref) is None  # type: ignore[arg-type]


def test_noise_below_a_billionth_is_not_a_change() -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(1), CLIENT)
    observe(table, rec, "Submitted", filled=4.0, remaining=6.0)
    assert observe(table, rec, "Submitted", filled=4.0 + 3e-10, remaining=6.0) is None
    assert observe(table, rec, "Submitted", filled=4.0, remaining=6.0 + 3e-10) is None


def test_the_guard_passes_keyword_arguments_through() -> None:
    seen: list[tuple] = []
    router = IbEventRouter(orders=None, system=None, account=None, market_data=None,  # type: ignore[arg-type]
                           pnl=None, outbox=FakeOutbox(), on_handler_error=lambda e: None)  # type: ignore[arg-type]

    def handler(*args: object, **kwargs: object) -> None:
        seen.append((args, kwargs))

    router._guard(handler)(1, code=2)
    assert seen == [((1,), {"code": 2})]


def test_an_order_without_a_client_id_is_looked_up_as_client_zero() -> None:
    table = IbOrderTable()
    one = IbOrderRecord(order_ref="", strategy_id="s", client_order_id="", symbol="A", ib_order_id=1, client_id=1)
    table._index(one)
    assert table.find(SimpleNamespace(order=SimpleNamespace(orderId=1), contract=None)) is None  # type: ignore
    zero = IbOrderRecord(order_ref="", strategy_id="s", client_order_id="", symbol="A", ib_order_id=1, client_id=0)
    table._index(zero)
    assert table.find(SimpleNamespace(order=SimpleNamespace(orderId=1), contract=None)) is zero  # type: ignore




# -- the event router: every library event reaches its collaborator, errors by request id -----------------------


class RecordingHandlers:
    """Stands for the order translator, the account and market-data feeds and the connection supervisor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str) -> Any:
        def handler(*args: object) -> None:
            self.calls.append((name, args))

        handler.__name__ = name
        return handler


class SubscribingSession:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def subscribe(self, **handlers: Any) -> None:
        self.handlers = handlers


def router_with(fake: RecordingHandlers, outbox: FakeOutbox, failures: list[BaseException]) -> IbEventRouter:
    return IbEventRouter(orders=fake, system=fake, account=fake, market_data=fake,  # type: ignore[arg-type]
                         pnl=fake, outbox=outbox, on_handler_error=failures.append)  # type: ignore[arg-type]


def test_every_library_event_is_connected_to_its_collaborator_through_the_guard() -> None:
    fake, outbox, failures = RecordingHandlers(), FakeOutbox(), []
    router = router_with(fake, outbox, failures)
    assert router.last_ib_code is None and router.pacing_violations == 0
    session = SubscribingSession()
    router.connect(session)  # type: ignore[arg-type]
    h = session.handlers
    assert sorted(h) == ["account_value", "disconnected", "error", "open_order_report", "order_error",
                         "order_report", "pnl", "pnl_single", "portfolio", "position", "tickers"]
    for name, args in (("order_report", (None, "r")), ("open_order_report", (None, "o")), ("disconnected", ()),
                       ("position", ("p",)), ("portfolio", ("i",)), ("account_value", ("v",)), ("tickers", ({"t"},)),
                       ("pnl", ("d",)), ("pnl_single", ("s",))):
        h[name](*args)
    h["order_error"](5, 201, "rejected", '{"reason": "x"}')
    assert fake.calls == [("on_status_report", (None, "r")), ("on_open_order_report", (None, "o")),
                          ("on_disconnected", ()), ("on_position", ("p",)), ("on_portfolio", ("i",)),
                          ("on_account_value", ("v",)), ("on_tickers", ({"t"},)), ("on_pnl", ("d",)),
                          ("on_pnl_single", ("s",)), ("on_order_error", (5, 201, "rejected", '{"reason": "x"}'))]
    assert router.last_ib_code == 201 and h["order_report"].__name__ == "on_status_report"

    def broken(*args: object, **kwargs: object) -> None:
        fake.calls.append(("broken", (args, kwargs)))
        raise ValueError("handler bug")

    router._guard(broken)(1, code=2)  # never raised into the library's decoder; keywords passed through
    assert fake.calls[-1] == ("broken", ((1,), {"code": 2})) and [type(f) for f in failures] == [ValueError]


def test_errors_are_routed_by_request_id_and_pacing_violations_alert() -> None:
    fake, outbox, failures = RecordingHandlers(), FakeOutbox(), []
    router = router_with(fake, outbox, failures)
    router.on_error(-1, 2104, "farm ok")
    router.on_error(5, 1100, "connectivity lost")
    router.on_error(7, 201, "an order's error")
    router.on_error(0, 399, "no request id")
    router.on_error(-2, 399, "an odd request id")
    assert fake.calls == [("on_system_code", (2104, "farm ok")), ("on_system_code", (1100, "connectivity lost")),
                          ("on_order_error", (7, 201, "an order's error"))]
    assert router.last_ib_code == 399 and outbox.alerts == []
    for _ in range(2):
        router.on_error(0, 100, "Max rate of messages per second has been exceeded")
    assert router.pacing_violations == 2 and [a[0] for a in outbox.alerts] == ["critical", "critical"]
    assert outbox.alerts[0][1] == "IB pacing violation: Max rate of messages per second has been exceeded"


def test_every_cancel_the_gateway_makes_carries_its_cause(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("q", 10)
    asyncio.run(gw.switch.kill(kill("k1")))
    assert gw.table.get("s1/a").cancel_cause == "kill k1: test kill"
    dropped = [e for e in gw.outbox.statuses if e.order_ref == "s1/q"]
    assert len(dropped) == 1 and "kill k1: test kill" in dropped[0].reason
    em = Gateway(tmp_path / "e")
    em.ib.add("s1/b", 2)
    em.sender.submit("99\0warm-up")
    em.queue_unsent("r", 11)
    asyncio.run(em.switch.emergency(EmergencyCancel(command_id="e1", scope="all", reason="loss limit")))
    assert em.table.get("s1/b").cancel_cause == "breaker e1: loss limit"
    assert "breaker e1: loss limit" in [e for e in em.outbox.statuses if e.order_ref == "s1/r"][0].reason
    sc = Gateway(tmp_path / "s")
    sc.ib.add("s1/m", 3, symbol="MSFT")
    asyncio.run(sc.switch.cancel_scope(CancelScope(scope="symbol:MSFT", reason="tidy"), "r9"))
    assert sc.table.get("s1/m").cancel_cause == "cancel scope symbol:MSFT: tidy"
    off = Gateway(tmp_path / "o")
    off.ib.add("s1/c", 4)
    off.connected = False
    asyncio.run(off.switch.kill(kill("k-off")))
    off.connected = True
    asyncio.run(off.switch.finish_pending("reconnect"))
    assert off.table.get("s1/c").cancel_cause == "kill k-off: test kill"


# -- causes, pending cancels and other clients' orders that leave IB's list ----------------------------------

from actors.gateway.cancels import breaker_cause, kill_cause, scope_cause, stamp_cause, strategy_cause  # noqa: E402


def test_cause_texts_and_the_first_cause_wins() -> None:
    assert (kill_cause("k1", "r"), breaker_cause("e1", "loss"), scope_cause("all", ""), scope_cause("all", "x"),
            strategy_cause(""), strategy_cause("rebalance")) == (
        "kill k1: r", "breaker e1: loss", "cancel scope all: requested", "cancel scope all: x",
        "strategy: cancel requested", "strategy: rebalance")
    table = IbOrderTable()
    rec = placed(table, order_spec("a"), ib_trade(1), CLIENT)
    stamp_cause(rec, "")
    assert rec.cancel_cause == ""
    stamp_cause(rec, "kill k1: r")
    stamp_cause(rec, "breaker e1: loss")
    assert rec.cancel_cause == "kill k1: r"
    done = placed(table, order_spec("b"), ib_trade(2), CLIENT)
    observe(table, done, "Filled", filled=10.0, remaining=0.0)
    stamp_cause(done, "kill k1: r")
    assert done.cancel_cause == ""  # a done order keeps its own end


def test_a_cancel_in_flight_is_marked_pending_for_the_notice_table(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1, stuck=True)
    gw.ib.add("s1/b", 2, stuck=True)
    rec = gw.table.get("s1/a")
    assert rec.cancel_pending is False and gw.sweeper.cancel_one(rec, "strategy: x") is True
    assert rec.cancel_pending is True and rec.cancel_cause == "strategy: x"
    asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=0.1, cause="kill k: r"))
    other = gw.table.get("s1/b")
    assert other.cancel_pending is True and other.cancel_cause == "kill k: r"


def test_an_order_first_seen_in_ibs_list_is_cancelled_with_the_sweeps_cause(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/late", 5, sticky=True, known=False)  # ours, but the table has not heard of it yet

    async def scenario() -> None:
        result = await gw.sweeper.sweep("all", use_global=True, timeout_s=1.0, cause="kill k2: r")
        assert result.confirmed
        again = await gw.sweeper.reverify(result, use_global=True, timeout_s=1.0, cause="kill k3: r")
        assert again.confirmed

    asyncio.run(scenario())
    assert gw.table.get("s1/late").cancel_cause == "kill k2: r"


def test_other_clients_orders_that_leave_ibs_list_are_counted_once_and_reported(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    vanished: list[str] = []
    gw.sweeper.on_vanished = vanished.append
    gw.ib.add("ext-gone", 3, client_id=99)  # ended by the global cancel: never listed again
    gw.ib.add("ext-done", 4, client_id=99)
    observe(gw.table, gw.table.get("ext-done"), "Cancelled")  # known to be done already: not counted
    gw.ib.add("s1/a", 1)
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=1.0))
    assert result.confirmed and result.cancelled == 2  # ours by its status, the other client's by leaving the list
    assert vanished == ["1 other client's order(s) left IB's list during a sweep"]
    quiet = Gateway(tmp_path / "q")
    quiet_calls: list[str] = []
    quiet.sweeper.on_vanished = quiet_calls.append
    quiet.ib.add("s1/a", 1)
    asyncio.run(quiet.sweeper.sweep("all", use_global=True, timeout_s=1.0))
    assert quiet_calls == []
    stuck = Gateway(tmp_path / "s")
    stuck.sweeper.on_vanished = quiet_calls.append
    stuck.ib.add("ext-stuck", 3, client_id=99, stuck=True)
    held = asyncio.run(stuck.sweeper.sweep("all", use_global=True, timeout_s=0.2))
    assert not held.confirmed and held.cancelled == 0 and quiet_calls == []  # still listed: not gone


# -- terms and contradictions (the order-truth table) ---------------------------------------------------------

from actors.gateway.ordertable import GATEWAY, PRICE_EPSILON, same_terms, terms_of_spec  # noqa: E402
from bus.messages import OrderTerms  # noqa: E402


def terms(**kw: Any) -> OrderTerms:
    base: dict[str, Any] = dict(side="BUY", quantity=10.0, order_type="LMT", limit_price=100.0, stop_price=None,
                                tif="DAY")
    base.update(kw)
    return OrderTerms(**base)


def test_terms_are_the_same_as_far_as_an_amendment_can_change_them() -> None:
    t = terms()
    assert same_terms(t, terms()) and same_terms(None, None)
    assert not same_terms(t, None) and not same_terms(None, t)
    assert same_terms(t, terms(quantity=10.0 + PRICE_EPSILON / 2)) and not same_terms(t, terms(quantity=10.5))
    assert not same_terms(t, terms(order_type="MKT"))
    assert same_terms(t, terms(limit_price=100.0 + PRICE_EPSILON / 20)) and not same_terms(t, terms(limit_price=99.0))
    assert not same_terms(t, terms(limit_price=None)) and not same_terms(terms(limit_price=None), t)
    assert not same_terms(terms(stop_price=90.0), t) and not same_terms(t, terms(stop_price=90.0))
    assert same_terms(terms(stop_price=90.0), terms(stop_price=90.0))
    assert same_terms(t, terms(tif="")) and same_terms(terms(tif=""), t)  # a TIF left out matches any
    assert not same_terms(t, terms(tif="GTC"))
    spec = order(coid="t", qty=3, limit=101.0, stop=99.0, tif="GTC")
    assert terms_of_spec(spec) == OrderTerms(side="BUY", quantity=3.0, order_type="STP LMT", limit_price=101.0,
                                             stop_price=99.0, tif="GTC")


def test_a_placed_record_starts_with_its_specs_terms_and_symbol() -> None:
    table = IbOrderTable()
    spec = order(coid="p", symbol="MSFT", limit=50.0)
    rec = table.add_placed(spec, 9, CLIENT)
    assert rec.symbol == "MSFT" and rec.published_terms == terms_of_spec(spec) and rec.perm_id == 0
    assert (rec.ib_order_id, rec.client_id, rec.status) == (9, CLIENT, "PendingSubmit")


def test_ibs_live_report_on_an_order_held_done_is_a_contradiction_reported_and_reconciled() -> None:
    table = IbOrderTable()
    seen: list[str] = []
    table.on_contradiction = seen.append
    rec = placed(table, order_spec("c"), ib_trade(3, perm=33), CLIENT)
    observe(table, rec, "Cancelled")  # IB's own Cancelled
    assert observe(table, rec, "Submitted") is None  # not published: reconciled with IB instead
    assert seen == [f"IB reports {rec.label()} Submitted after it was Cancelled (ib)"]
    assert table.observe(rec, status="Submitted", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                         source=GATEWAY) is None and len(seen) == 1  # the gateway's own guess: ignored
    ours = placed(table, order_spec("g"), ib_trade(4, perm=44), CLIENT)
    table.observe(ours, status="Cancelled", filled=0.0, remaining=10.0, avg_fill_price=0.0, source=GATEWAY)
    ev = observe(table, ours, "Submitted")
    assert ev is not None and ev.status == "Submitted" and ev.perm_id == 44  # IB's word replaces ours
    assert seen[-1] == f"IB reports {ours.label()} Submitted after it was Cancelled (gateway)"
    assert table.observe(ours, status="Cancelled", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                         source=GATEWAY) is not None


def test_a_status_publishes_new_terms_only_when_they_changed() -> None:
    table = IbOrderTable()
    spec = order(coid="n", limit=100.0)
    rec = placed(table, spec, ib_trade(5), CLIENT)
    same = table.observe(rec, status="Submitted", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                         terms=terms_of_spec(spec))
    assert same is not None and same.terms is None
    assert table.observe(rec, status="Submitted", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                         terms=terms_of_spec(spec)) is None
    changed = table.observe(rec, status="Submitted", filled=0.0, remaining=10.0, avg_fill_price=0.0,
                            terms=terms(limit_price=99.0))
    assert changed is not None and changed.terms == terms(limit_price=99.0) and rec.published_terms == changed.terms


# -- order events: IB's own reports, with or without the library's Trade ----------------------------------------

from actors.gateway import connection as cs  # noqa: E402
from actors.gateway.reports import OpenOrderReport, StatusReport  # noqa: E402


class Translator:
    """The translator over a real table, publishing into :class:`FakeOutbox` (notices recorded too)."""

    def __init__(self, state: str = cs.READY) -> None:
        self.table = IbOrderTable()
        self.outbox = FakeOutbox()
        self.outbox.notices = []  # type: ignore[attr-defined]
        self.outbox.order_notice = self.outbox.notices.append  # type: ignore[attr-defined]
        self.conn = cs.ConnectionTracker()
        self.conn.state = state
        self.applied: list[tuple[Any, Any]] = []
        self.resyncs: list[str] = []
        self.tr = OrderEventTranslator(self.table, self.outbox, self.conn, client_id=CLIENT,  # type: ignore
                                       apply_spec=lambda o, s: self.applied.append((o, s)),
                                       resync=self.resyncs.append)


def report(status: str, *, oid: int = 1, perm: int = 11, filled: float = 0.0, remaining: float = 10.0,
           avg: float = 0.0, last: float = 0.0, client: int = CLIENT) -> StatusReport:
    return StatusReport(order_id=oid, client_id=client, perm_id=perm, status=status, filled=filled,
                        remaining=remaining, avg_fill_price=avg, last_fill_price=last)


def test_ibs_status_reports_carry_ibs_figures_found_with_or_without_the_librarys_trade() -> None:
    t = Translator(state=cs.CONNECTED)
    rec = t.table.add_placed(order_spec("a"), 1, CLIENT)
    t.tr.on_status_report(None, report("Submitted", filled=4.0, remaining=6.0, avg=100.5, last=100.25))
    e = t.outbox.statuses[-1]
    assert (e.order_ref, e.status, e.filled, e.remaining, e.avg_fill_price, e.last_fill_price, e.replayed,
            e.reason) == ("s1/a", "Submitted", 4.0, 6.0, 100.5, 100.25, True, "")
    assert rec.acknowledged
    t.conn.state = cs.READY
    t.table.attach(ib_trade(1, perm=11))  # now known by its permId too
    t.tr.on_status_report(None, report("Submitted", oid=999, filled=5.0, remaining=5.0))  # found by permId
    assert t.outbox.statuses[-1].filled == 5.0 and not t.outbox.statuses[-1].replayed
    n = len(t.outbox.statuses)
    t.tr.on_status_report(None, report("Submitted", oid=2, perm=0))  # an order never described: ignored
    t.tr.on_status_report(None, report("Submitted", oid=1, perm=0, client=CLIENT + 1))
    assert len(t.outbox.statuses) == n
    trade = ib_trade(3, perm=33, ref="s1/t")
    t.table.add_placed(order_spec("t"), 3, CLIENT)
    t.tr.on_status_report(trade, report("PreSubmitted", oid=3, perm=33))
    assert t.outbox.statuses[-1].order_ref == "s1/t" and t.table.get("s1/t").trade is trade


def test_a_cancelled_status_carries_the_cancels_cause_and_no_other_status_does() -> None:
    t = Translator()
    rec = t.table.add_placed(order_spec("a"), 1, CLIENT)
    rec.cancel_cause = "kill k1: test"
    t.tr.on_status_report(None, report("Submitted"))
    assert t.outbox.statuses[-1].reason == ""
    t.tr.on_status_report(None, report("Cancelled"))
    assert (t.outbox.statuses[-1].status, t.outbox.statuses[-1].reason) == ("Cancelled", "kill k1: test")


def test_an_open_order_report_confirms_an_amendment_and_publishes_ibs_terms() -> None:
    t = Translator()
    spec = order(coid="m", limit=100.0)
    rec = t.table.add_placed(spec, 1, CLIENT)
    t.tr.on_status_report(None, report("Submitted"))
    new = msgspec.structs.replace(spec, limit_price=99.0)
    rec.amendment, rec.modify_pending = new, True
    other = OpenOrderReport(order_id=1, client_id=CLIENT, perm_id=11, order_ref="s1/m", status="Submitted",
                            terms=terms_of_spec(msgspec.structs.replace(spec, limit_price=98.0)), listed=False)
    t.tr.on_open_order_report(None, other)  # not the amendment's terms: still pending
    assert rec.modify_pending and rec.amendment == new and rec.spec == spec
    confirm = OpenOrderReport(order_id=1, client_id=CLIENT, perm_id=11, order_ref="s1/m", status="Submitted",
                              terms=terms_of_spec(new), listed=False)
    t.tr.on_open_order_report(None, confirm)
    assert not rec.modify_pending and rec.amendment is None and rec.spec == new
    e = t.outbox.statuses[-1]
    assert e.terms == terms_of_spec(new) and (e.filled, e.remaining) == (0.0, 10.0)
    filled = OpenOrderReport(order_id=1, client_id=CLIENT, perm_id=11, order_ref="s1/m", status="Filled",
                             terms=terms_of_spec(new), listed=True)
    t.tr.on_open_order_report(None, filled)
    assert (t.outbox.statuses[-1].status, t.outbox.statuses[-1].filled, t.outbox.statuses[-1].remaining) == (
        "Filled", 10.0, 0.0)
    n = len(t.outbox.statuses)
    t.tr.on_open_order_report(None, OpenOrderReport(order_id=7, client_id=CLIENT, perm_id=77, order_ref="",
                                                    status="Submitted", terms=terms(), listed=True))
    assert len(t.outbox.statuses) == n  # not an order this table knows: nothing
    quiet = t.table.add_placed(order_spec("q"), 8, CLIENT)
    quiet.status = ""
    t.tr.on_open_order_report(None, OpenOrderReport(order_id=8, client_id=CLIENT, perm_id=88, order_ref="s1/q",
                                                    status="", terms=terms(), listed=True))
    assert len(t.outbox.statuses) == n and quiet.ib_terms == terms()  # terms kept, no status to publish


def test_a_refused_amendment_puts_the_previous_terms_back_on_the_librarys_order() -> None:
    t = Translator()
    spec = order(coid="r", limit=100.0)
    rec = t.table.add_placed(spec, 1, CLIENT)
    trade = ib_trade(1, perm=11, ref="s1/r")
    t.table.attach(trade)
    t.tr.on_status_report(None, report("Submitted"))
    rec.amendment, rec.modify_pending = msgspec.structs.replace(spec, limit_price=99.0), True
    t.tr.on_order_error(1, 110, "The price does not conform to the minimum price variation")
    assert not rec.modify_pending and rec.amendment is None and t.applied == [(trade.order, spec)]
    assert t.outbox.notices[-1].effect == "amend_rejected" and t.outbox.statuses[-1].status == "Submitted"
    bare = t.table.add_placed(order_spec("b"), 2, CLIENT)  # no library Trade yet: nothing to put back
    t.tr.on_status_report(None, report("Submitted", oid=2, perm=22))
    bare.modify_pending = True
    t.tr.on_order_error(2, 110, "off tick")
    assert len(t.applied) == 1 and not bare.modify_pending


def test_ibs_202_after_a_cancel_nobody_here_asked_for_is_published_with_its_text() -> None:
    t = Translator()
    rec = t.table.add_placed(order_spec("x"), 1, CLIENT)
    t.tr.on_status_report(None, report("Submitted", filled=2.0, remaining=8.0, avg=50.0))
    t.tr.on_status_report(None, report("Cancelled", filled=2.0, remaining=8.0, avg=50.0))
    t.tr.on_order_error(1, 202, "Order Canceled - reason: price check")
    e = t.outbox.statuses[-1]
    assert (e.status, e.error_code, e.reason, e.filled, e.avg_fill_price) == (
        "Cancelled", 202, "Order Canceled - reason: price check", 2.0, 50.0)
    assert rec.final_source == "ib"
    n = len(t.outbox.statuses)
    t.tr.on_order_error(1, 202, "again")  # already published with its code
    assert len(t.outbox.statuses) == n
    filled = t.table.add_placed(order_spec("f"), 2, CLIENT)
    t.tr.on_status_report(None, report("Filled", oid=2, perm=22, filled=10.0, remaining=0.0))
    t.tr.on_order_error(2, 202, "too late")  # a filled order was not cancelled
    assert t.outbox.statuses[-1].status == "Filled" and filled.status == "Filled"


def test_the_router_sends_system_codes_and_order_errors_where_they_belong() -> None:
    fake, outbox, failures = RecordingHandlers(), FakeOutbox(), []
    router = router_with(fake, outbox, failures)
    router.on_error(1, 399, "request id one is an order's")
    router.on_error(-1, 399, "no order")
    assert fake.calls == [("on_order_error", (1, 399, "request id one is an order's")),
                          ("on_system_code", (399, "no order"))]
    session = SubscribingSession()
    router.connect(session)  # type: ignore[arg-type]
    session.handlers["error"](-1, 2104, "farm ok", None)
    assert fake.calls[-1] == ("on_system_code", (2104, "farm ok"))


def test_a_global_sweep_marks_its_targets_cancelling_before_the_global_cancel(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)
    gw.ib.add("s1/b", 2)
    seen: list[tuple[str, bool, str]] = []
    gw.ib.on_global = lambda: seen.extend((r.key, r.cancel_pending, r.cancel_cause) for r in gw.table.records())
    asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=1.0, cause="kill k: r"))
    assert sorted(seen) == [("s1/a", True, "kill k: r"), ("s1/b", True, "kill k: r")]


def test_an_order_placed_after_a_confirmed_sweep_gets_the_joining_kills_cause(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/a", 1)

    async def scenario() -> None:
        await gw.switch.emergency(EmergencyCancel(command_id="k7", scope="all", reason="loss"))
        gw.ib.add("s1/new", 9, sticky=True, known=False)  # ours, placed meanwhile, unknown to the table yet
        report = await gw.switch.kill(kill("k7"))
        assert report.confirmed

    asyncio.run(scenario())
    assert gw.table.get("s1/new").cancel_cause == "kill k7: test kill"


def test_an_order_dropped_before_it_reached_ib_is_the_gateways_decision(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.sender.submit("99\0warm-up")
    gw.queue_unsent("q", 10)
    gw.unsent.drop(cause="strategy: r")
    rec = gw.table.get("s1/q")
    assert rec.status == "Cancelled" and rec.final_source == GATEWAY


def test_the_end_of_an_order_clears_what_was_pending_and_ibs_correction_reopens_it() -> None:
    table = IbOrderTable()
    rec = placed(table, order_spec("e"), ib_trade(1, perm=10), CLIENT)
    observe(table, rec, "Submitted")
    rec.modify_pending, rec.amendment, rec.cancel_pending = True, order_spec("e2"), True
    observe(table, rec, "Cancelled")
    assert (rec.modify_pending, rec.amendment, rec.cancel_pending, rec.final_source) == (False, None, False, "ib")
    assert rec.done_mono is not None
    ours = placed(table, order_spec("g"), ib_trade(2, perm=20), CLIENT)
    table.observe(ours, status="Cancelled", filled=0.0, remaining=10.0, avg_fill_price=0.0, source=GATEWAY)
    assert ours.final_source == GATEWAY
    observe(table, ours, "Submitted")  # IB corrects the gateway's guess: working again
    assert (ours.final_source, ours.done_mono, ours.is_working) == ("", None, True)
    observe(table, rec, "Filled", filled=10.0, remaining=0.0)  # the cancel race lost: not a correction
    assert rec.done_mono is not None


def test_a_record_whose_order_was_never_sent_is_forgotten_everywhere() -> None:
    table = IbOrderTable()
    keep = placed(table, order_spec("k"), ib_trade(1, perm=10), CLIENT)
    gone = placed(table, order_spec("x"), ib_trade(2, perm=20), CLIENT)
    table.remove(gone)
    assert table.get("s1/x") is None and 20 not in table.by_perm and (CLIENT, 2) not in table.by_id
    assert table.get("s1/k") is keep and table.by_perm[10] is keep and table.by_id[(CLIENT, 1)] is keep
    table.remove(gone)  # twice: nothing else goes
    assert len(table) == 1
    twin = IbOrderRecord(order_ref="s1/k", strategy_id="s1", client_order_id="k", symbol="AAPL", ib_order_id=1,
                         client_id=CLIENT, perm_id=10, indexed_key="s1/k")
    table.remove(twin)  # not the record filed under those keys: it stays
    assert table.get("s1/k") is keep and table.by_perm[10] is keep and table.by_id[(CLIENT, 1)] is keep


def test_every_notice_names_its_order_and_is_counted_by_effect() -> None:
    t = Translator()
    rec = t.table.add_placed(order_spec("n", symbol="MSFT"), 1, CLIENT)
    trade = ib_trade(1, perm=11, ref="s1/n", symbol="MSFT")
    trade.advancedError = '{"reason": "held by the exchange"}'
    t.table.attach(trade)
    t.tr.on_status_report(None, report("Submitted", filled=1.0, remaining=9.0, avg=20.5))
    t.tr.on_order_error(1, 399, "Warning: held")
    t.tr.on_order_error(1, 2109, "outside RTH")
    n = t.outbox.notices[-1]
    assert (n.order_ref, n.strategy_id, n.client_order_id, n.ib_order_id, n.perm_id, n.symbol, n.code, n.effect) == (
        "s1/n", "s1", "n", 1, 11, "MSFT", 2109, "info")
    assert t.outbox.notices[0].message == "held by the exchange"  # IB's advanced reason, from the library's Trade
    assert t.tr.notices == {"info": 2}
    fresh = t.table.add_placed(order_spec("r"), 2, CLIENT)  # not acknowledged by IB: a refusal is final
    t.tr.on_order_error(2, 201, "Order rejected - reason: margin", '{"text": "margin"}')
    e = t.outbox.statuses[-1]
    assert (e.order_ref, e.status, e.error_code, e.reason, e.avg_fill_price) == ("s1/r", "Cancelled", 201, "margin",
                                                                                  0.0)
    assert t.tr.notices == {"info": 2, "rejected": 1} and fresh.final_source == GATEWAY


def test_an_open_order_report_acknowledges_the_order_and_keeps_its_fill_prices() -> None:
    t = Translator()
    spec = order(coid="o", limit=100.0)
    rec = t.table.add_placed(spec, 1, CLIENT)
    t.tr.on_status_report(None, report("Submitted", filled=2.0, remaining=8.0, avg=99.5, last=99.25))
    rec.acknowledged = False
    t.tr.on_open_order_report(None, OpenOrderReport(order_id=1, client_id=CLIENT, perm_id=11, order_ref="s1/o",
                                                    status="Submitted", terms=terms_of_spec(
                                                        msgspec.structs.replace(spec, limit_price=99.0)),
                                                    listed=False))
    e = t.outbox.statuses[-1]
    assert rec.acknowledged and (e.avg_fill_price, e.last_fill_price, e.filled) == (99.5, 99.25, 2.0)


# -- the order's contract (IB's conId): what conid: scopes match and every status event carries -------------------

AAPL_CONID = 265598


def trade_with_contract(oid: int, contract: Any, *, ref: str = "s1/a", perm: int = 0) -> Trade:
    lmt = LimitOrder("BUY", 10.0, 100.0, orderRef=ref, orderId=oid, clientId=CLIENT, permId=perm)
    return Trade(contract=contract, order=lmt, orderStatus=OrderStatus(status="Submitted"))


def test_an_order_placed_with_ibs_contract_keeps_its_con_id_in_scopes_and_events() -> None:
    table = IbOrderTable()
    rec = table.add_placed(order_spec("a"), 4, CLIENT, symbol="AAPL", con_id=AAPL_CONID)
    assert rec.con_id == AAPL_CONID
    assert rec.in_scope(f"conid:{AAPL_CONID}") and not rec.in_scope("conid:1") and rec.in_scope("symbol:aapl")
    table.attach(trade_with_contract(4, Stock("AAPL", "SMART", "USD", conId=999)))  # the placement's contract wins
    assert rec.con_id == AAPL_CONID
    ev = observe(table, rec, "Submitted")
    assert (ev.con_id, ev.symbol) == (AAPL_CONID, "AAPL")
    done = observe(table, rec, "Cancelled", remaining=0.0)
    assert done.con_id == AAPL_CONID


def test_an_order_placed_without_a_con_id_takes_ibs_when_ib_reports_it() -> None:
    table = IbOrderTable()
    rec = table.add_placed(order_spec("a"), 4, CLIENT)
    assert rec.con_id == 0 and not rec.in_scope("conid:1") and not rec.in_scope("conid:0")
    table.attach(trade_with_contract(4, Stock("AAPL", "SMART", "USD")))  # IB's contract says conId 0: unknown
    assert rec.con_id == 0
    table.attach(trade_with_contract(4, SimpleNamespace(symbol="AAPL")))  # a contract object without a conId
    assert rec.con_id == 0
    table.attach(trade_with_contract(4, Stock("AAPL", "SMART", "USD", conId=AAPL_CONID)))
    assert rec.con_id == AAPL_CONID and rec.in_scope(f"conid:{AAPL_CONID}")
    assert observe(table, rec, "Submitted").con_id == AAPL_CONID


def test_an_order_first_seen_at_ib_gets_its_con_id_from_ibs_contract_only() -> None:
    table = IbOrderTable()
    known, created = table.attach(trade_with_contract(5, Stock("MSFT", "SMART", "USD", conId=272093), ref=""))
    assert created and (known.con_id, known.symbol) == (272093, "MSFT")
    zero, created = table.attach(trade_with_contract(6, Stock("MSFT", "SMART", "USD"), ref=""))
    assert created and zero.con_id == 0
    bare, created = table.attach(trade_with_contract(7, SimpleNamespace(symbol="MSFT"), ref=""))
    assert created and bare.con_id == 0 and bare.symbol == "MSFT"


def test_ibs_final_status_never_replaces_a_final_status_the_gateway_decided() -> None:
    table = IbOrderTable()
    seen: list[str] = []
    table.on_contradiction = seen.append
    rec = table.add_placed(order_spec("a"), 4, CLIENT)
    assert observe(table, rec, "Cancelled", remaining=0.0, source=GATEWAY) is not None  # before transmission
    assert observe(table, rec, "ApiCancelled", remaining=0.0) is None  # final after final: nothing to correct
    assert (rec.status, rec.final_source, seen) == ("Cancelled", GATEWAY, [])
    assert observe(table, rec, "Submitted").correction  # a live report does correct it


def test_an_open_order_report_files_an_order_first_seen_at_ib_and_finds_another_clients_by_perm_id() -> None:
    t = Translator()
    trade = trade_with_contract(5, Stock("MSFT", "SMART", "USD", conId=272093), ref="", perm=55)
    t.tr.on_open_order_report(trade, OpenOrderReport(order_id=5, client_id=CLIENT, perm_id=55, order_ref="",
                                                     status="Submitted", terms=terms(), listed=True))
    e = t.outbox.statuses[-1]
    assert (e.order_ref, e.perm_id, e.status, e.con_id, e.symbol) == ("", 55, "Submitted", 272093, "MSFT")
    assert t.table.by_perm[55].trade is trade and t.table.by_perm[55].acknowledged
    # another client's order (TWS by hand: client 0, order id 0) is known by its permId alone
    other, _ = t.table.attach(trade_with_contract(0, Stock("AAPL", "SMART", "USD"), ref="", perm=66))
    other.client_id, other.ib_order_id = 0, 0
    t.tr.on_open_order_report(None, OpenOrderReport(order_id=0, client_id=0, perm_id=66, order_ref="",
                                                    status="PreSubmitted", terms=terms(), listed=True))
    assert (t.outbox.statuses[-1].perm_id, t.outbox.statuses[-1].status) == (66, "PreSubmitted")
    assert other.acknowledged


def test_ibs_202_after_a_fill_changes_nothing() -> None:
    t = Translator()
    rec = t.table.add_placed(order_spec("f"), 1, CLIENT)
    t.tr.on_status_report(None, report("Filled", filled=10.0, remaining=0.0, avg=100.0))
    n = len(t.outbox.statuses)
    t.tr.on_order_error(1, 202, "Order Canceled - reason:")
    assert len(t.outbox.statuses) == n and rec.status == "Filled" and rec.published[3] is None
    assert t.outbox.notices[-1].code == 202 and t.outbox.notices[-1].status == "Filled"


def test_a_notice_carries_the_terms_that_stand_only_for_a_refused_amendment_and_ibs_own_reason() -> None:
    t = Translator()
    spec = order(coid="n", limit=100.0)
    rec = t.table.add_placed(spec, 1, CLIENT)
    t.table.attach(ib_trade(1, perm=11, ref="s1/n"))
    t.tr.on_status_report(None, report("Submitted"))
    t.tr.on_order_error(1, 2109, "Order Event Warning: outside regular trading hours")
    assert (t.outbox.notices[-1].effect, t.outbox.notices[-1].terms) == ("info", None)
    rec.amendment, rec.modify_pending = msgspec.structs.replace(spec, limit_price=99.0), True
    t.tr.on_order_error(1, 110, "The price does not conform to the minimum price variation")
    assert t.outbox.notices[-1].effect == "amend_rejected"
    assert t.outbox.notices[-1].terms == terms_of_spec(spec)  # IB has not reported terms: the published ones stand
    rec.ib_terms = terms(limit_price=100.5)
    rec.amendment, rec.modify_pending = msgspec.structs.replace(spec, limit_price=98.0), True
    t.tr.on_order_error(1, 110, "The price does not conform to the minimum price variation")
    assert t.outbox.notices[-1].terms == terms(limit_price=100.5)  # IB's last report stands
    # IB's reason given with the error wins over the library's copy on the trade
    fresh = t.table.add_placed(order_spec("m"), 2, CLIENT)
    t.table.attach(ib_trade(2, ref="s1/m"))
    t.tr.on_order_error(2, 201, "Order rejected - reason: margin", '{"reason": "insufficient equity"}')
    assert (t.outbox.statuses[-1].order_ref, t.outbox.statuses[-1].reason) == ("s1/m", "insufficient equity")
    assert fresh.status == "Cancelled"


def test_an_unknown_code_on_an_order_asks_for_a_reconciliation_naming_code_and_order() -> None:
    t = Translator()
    t.table.add_placed(order_spec("u"), 1, CLIENT)
    t.tr.on_status_report(None, report("Submitted"))
    t.tr.on_order_error(1, 123456, "something IB never documented")
    assert t.resyncs == ["IB 123456 on s1/u (orderId 1, permId 0)"]
    assert t.outbox.notices[-1].effect == "unknown" and t.outbox.statuses[-1].status == "Submitted"


def test_an_error_the_data_plane_claims_never_reaches_the_orders() -> None:
    fake, outbox, failures = RecordingHandlers(), FakeOutbox(), []
    router = router_with(fake, outbox, failures)
    asked: list[tuple[int, int, str]] = []

    def data_errors(req_id: int, code: int, message: str) -> bool:
        asked.append((req_id, code, message))
        return req_id in (1, 9)  # history requests' ids (1: the first id of a connection)

    router.data_errors = data_errors
    router.on_error(1, 162, "Historical Market Data Service error message: pacing")
    asked.clear()
    router.on_error(9, 162, "Historical Market Data Service error message: no data")
    router.on_error(7, 201, "an order's error")
    router.on_error(0, 399, "no request id")
    router.on_error(-1, 2104, "farm ok")
    assert asked == [(9, 162, "Historical Market Data Service error message: no data"), (7, 201, "an order's error")]
    assert fake.calls == [("on_order_error", (7, 201, "an order's error")), ("on_system_code", (2104, "farm ok"))]
    assert router.last_ib_code == 2104


# -- a sweep that spares some orders (kill --keep-protective, issue 16) -----------------------------------------


def spare(key: str) -> Any:
    """``keep(record)`` for one order (what :func:`actors.gateway.protective.protective_keeper` answers for a stop
    that closes an open position): the sweep must neither cancel it by id nor send a global cancel."""
    return lambda rec: rec.key == key


def test_a_sweep_that_keeps_an_order_cancels_the_rest_by_id_and_never_globally(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)
    gw.ib.add("s1/a", 1)
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=1.0, keep=spare("s1/stop")))
    assert result.confirmed and result.remaining == [] and result.cancelled == 1
    assert gw.ib.count("global") == 0 and ("cancel", 2) not in gw.ib.calls and ("cancel", 1) in gw.ib.calls
    assert gw.ib.working() == ["s1/stop"] and gw.table.get("s1/stop").cancel_cause == ""


def test_a_kept_order_listed_first_never_hides_a_stuck_one_behind_it(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)  # IB lists it before the stuck one
    gw.ib.add("s1/stuck", 1, stuck=True)
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=0.4, keep=spare("s1/stop")))
    assert not result.confirmed and result.remaining == ["s1/stuck"]
    assert gw.ib.working() == ["s1/stop", "s1/stuck"] and ("cancel", 2) not in gw.ib.calls


def test_reverify_that_keeps_an_order_never_cancels_it_and_never_globally(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)
    gw.ib.add("ext", 3, client_id=99)  # another client's: only a global cancel could end it, which would take the stop
    first = SweepResult(scope="all", confirmed=True, rounds=1, global_cancels=1)
    again = asyncio.run(gw.sweeper.reverify(first, use_global=True, timeout_s=0.4, keep=spare("s1/stop")))
    assert not again.confirmed and again.remaining == ["ext"] and again.global_cancels == 1
    assert gw.ib.count("global") == 0 and gw.ib.count("cancel") == 0
    assert gw.ib.working() == ["ext", "s1/stop"]


def test_reverify_that_keeps_an_order_leaves_it_out_of_what_still_works_when_ib_cannot_list(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)
    gw.ib.add("s1/b", 1, stuck=True)
    gw.ib.list_error = TimeoutError()
    first = SweepResult(scope="all", confirmed=True, rounds=1)
    again = asyncio.run(gw.sweeper.reverify(first, use_global=True, timeout_s=0.3, keep=spare("s1/stop")))
    assert not again.confirmed and again.remaining == ["s1/b"]  # the kept stop is not "still working"
    assert ("cancel", 1) in gw.ib.calls and ("cancel", 2) not in gw.ib.calls  # re-cancelled what it knew, not the stop
    assert gw.ib.working() == ["s1/b", "s1/stop"]


def test_a_sweep_that_keeps_an_order_leaves_it_out_of_what_still_works_when_ib_cannot_list(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)
    gw.ib.add("s1/b", 1, stuck=True)
    gw.ib.list_error = ConnectionError("socket closed")
    result = asyncio.run(gw.sweeper.sweep("all", use_global=True, timeout_s=0.3, keep=spare("s1/stop")))
    assert not result.confirmed and result.remaining == ["s1/b"] and ("cancel", 2) not in gw.ib.calls


def test_registry_passes_the_keep_to_the_sweep_and_to_its_second_verification(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.ib.add("s1/stop", 2)
    gw.ib.add("s1/a", 1)
    keep = spare("s1/stop")

    async def scenario() -> tuple[SweepResult, SweepResult]:
        first = await gw.sweeps.run("k1", "all", cause="kill k1: test", keep=keep)
        # a kill latched after that confirmation joins it: one more verification, still sparing the stop
        gw.ib.add("s1/late", 4)
        second = await gw.sweeps.run("k1", "all", not_before=time.monotonic(), cause="kill k1: test", keep=keep)
        return first, second

    first, second = asyncio.run(scenario())
    assert first.confirmed and second.confirmed and second.verified_mono > first.verified_mono
    assert gw.ib.count("global") == 0 and ("cancel", 2) not in gw.ib.calls
    assert gw.ib.working() == ["s1/stop"]
    assert gw.table.get("s1/late").cancel_cause == "kill k1: test"


def protected_gateway(tmp_path: Path) -> Gateway:
    """A gateway whose protective keeper spares ``s1/stop`` (a stop that closes an open position), with that stop,
    a plain working order ``s1/a`` and the two ids 2 and 1."""
    gw = Gateway(tmp_path, protective=spare("s1/stop"))
    gw.ib.add("s1/stop", 2)
    gw.ib.add("s1/a", 1)
    return gw


def test_kill_keep_protective_spares_the_protective_stop_and_cancels_the_rest_by_id(tmp_path: Path) -> None:
    gw = protected_gateway(tmp_path)
    report = asyncio.run(gw.switch.kill(Kill(kill_id="k1", reason="test kill", keep_protective=True)))
    assert report.confirmed and report.cancelled == 1 and report.trading_state == "HALTED"
    assert gw.ib.working() == ["s1/stop"] and gw.ib.count("global") == 0 and ("cancel", 2) not in gw.ib.calls


def test_kill_without_keep_protective_cancels_the_protective_stop_too(tmp_path: Path) -> None:
    gw = protected_gateway(tmp_path)
    report = asyncio.run(gw.switch.kill(kill("k1")))
    assert report.confirmed and report.cancelled == 2 and gw.ib.working() == []
    assert gw.ib.count("global") == 1


def test_kill_keep_protective_while_disconnected_persists_the_choice_and_the_later_sweep_keeps_the_stop(
    tmp_path: Path,
) -> None:
    gw = protected_gateway(tmp_path)
    gw.connected = False
    asyncio.run(gw.switch.kill(Kill(kill_id="k-off", reason="test kill", keep_protective=True)))
    assert [(p.command_id, p.keep_protective) for p in gw.saved().pending] == [("k-off", True)]
    gw.connected = True
    asyncio.run(gw.switch.finish_pending("reconnect"))
    assert gw.ib.working() == ["s1/stop"] and gw.ib.count("global") == 0 and gw.saved().pending == []
    assert gw.table.get("s1/a").status == "Cancelled"


def test_a_pending_kill_without_keep_protective_cancels_the_protective_stop_after_the_reconnect(tmp_path: Path) -> None:
    gw = protected_gateway(tmp_path)
    gw.connected = False
    asyncio.run(gw.switch.kill(kill("k-off")))
    assert [(p.command_id, p.keep_protective) for p in gw.saved().pending] == [("k-off", False)]
    gw.connected = True
    asyncio.run(gw.switch.finish_pending("reconnect"))
    assert gw.ib.working() == [] and gw.saved().pending == []


def test_emergency_cancel_keep_protective_spares_the_stop_and_without_it_cancels_the_stop(tmp_path: Path) -> None:
    gw = protected_gateway(tmp_path)
    kept = asyncio.run(gw.switch.emergency(
        EmergencyCancel(command_id="e1", reason="breaker", keep_protective=True)))  # type: ignore[arg-type]
    assert kept.confirmed and kept.cancelled == 1 and kept.trading_state == "ACTIVE"
    assert gw.ib.working() == ["s1/stop"] and gw.ib.count("global") == 0
    plain = asyncio.run(gw.switch.emergency(EmergencyCancel(command_id="e2", reason="breaker")))  # type: ignore[arg-type]
    assert plain.confirmed and gw.ib.working() == [] and gw.ib.count("global") == 1
