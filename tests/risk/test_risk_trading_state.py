"""Trading states: the transition table, persistence (atomic, survives a reload), fail-closed recovery."""

from __future__ import annotations

import json

import pytest

from actors.risk.trading_state import (
    ACTIVE,
    HALTED,
    REDUCING,
    Authority,
    PersistError,
    TradingStates,
    TransitionRefused,
    write_json_atomic,
)

OP, BRK, LIFT = Authority.OPERATOR, Authority.BREAKER, Authority.LIFT


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "risk.json"


def test_fresh_start_is_active_with_epoch_zero(path):
    ts = TradingStates.load(path)
    assert ts.get("all").state == ACTIVE and ts.epoch == 0 and not ts.load_error
    assert ts.effective("alpha", "AAPL") == (ACTIVE, [])


def test_halted_survives_a_reload_with_its_epoch(path):
    ts = TradingStates.load(path)
    change = ts.set("all", HALTED, reason="kill k1", origin="cli", authority=OP)
    assert change.persisted and change.new.epoch == 1
    again = TradingStates.load(path)
    assert again.get("all").state == HALTED and again.get("all").reason == "kill k1" and again.epoch == 1
    assert again.set("all", ACTIVE, reason="resume", origin="cli", authority=OP).new.epoch == 2


def test_every_change_increments_the_epoch(path):
    ts = TradingStates.load(path)
    epochs = [ts.set(s, st, reason="r", origin="o", authority=OP).new.epoch for s, st in
              [("all", REDUCING), ("strategy:a", HALTED), ("symbol:X", REDUCING), ("all", ACTIVE)]]
    assert epochs == [1, 2, 3, 4]


def test_effective_state_is_the_most_severe_of_global_strategy_and_symbol(path):
    ts = TradingStates.load(path)
    ts.set("all", REDUCING, reason="r", origin="o", authority=OP)
    ts.set("strategy:alpha", HALTED, reason="r", origin="o", authority=OP)
    assert ts.effective("alpha", "AAPL") == (HALTED, ["all", "strategy:alpha"])
    assert ts.effective("beta", "AAPL") == (REDUCING, ["all"])
    ts.set("symbol:MSFT", HALTED, reason="r", origin="o", authority=OP)
    assert ts.effective("beta", "MSFT")[0] == HALTED


def test_breaker_may_only_escalate(path):
    ts = TradingStates.load(path)
    assert ts.set("all", REDUCING, reason="dc", origin="risk.disconnect", authority=BRK) is not None
    with pytest.raises(TransitionRefused):
        ts.set("all", ACTIVE, reason="x", origin="risk.disconnect", authority=BRK)
    ts.set("all", HALTED, reason="loss", origin="risk.daily_loss", authority=BRK)
    with pytest.raises(TransitionRefused):
        ts.set("all", REDUCING, reason="x", origin="risk.disconnect", authority=BRK)


def test_breaker_never_lifts_an_operator_halt(path):
    ts = TradingStates.load(path)
    ts.set("all", HALTED, reason="kill", origin="cli", authority=OP)
    assert ts.set("all", HALTED, reason="dc", origin="risk.disconnect", authority=BRK) is None  # keeps owner
    with pytest.raises(TransitionRefused):
        ts.set("all", ACTIVE, reason="back", origin="risk.disconnect", authority=LIFT)
    assert ts.get("all").state == HALTED and ts.get("all").origin == "cli"


def test_lift_restores_what_the_breaker_covered(path):
    ts = TradingStates.load(path)
    ts.set("all", REDUCING, reason="operator reduce", origin="cli", authority=OP)
    ts.set("all", HALTED, reason="dc", origin="risk.disconnect", authority=BRK)
    ts.set("all", ACTIVE, reason="back", origin="risk.disconnect", authority=LIFT)
    assert ts.get("all").state == REDUCING and ts.get("all").origin == "cli"
    # the prior survives persistence too
    ts.set("all", HALTED, reason="dc", origin="risk.disconnect", authority=BRK)
    again = TradingStates.load(path)
    again.set("all", ACTIVE, reason="back", origin="risk.disconnect", authority=LIFT)
    assert again.get("all").state == REDUCING


def test_operator_takes_ownership_of_a_breaker_halt(path):
    ts = TradingStates.load(path)
    ts.set("all", HALTED, reason="dc", origin="risk.disconnect", authority=BRK)
    ts.set("all", HALTED, reason="kill", origin="cli", authority=OP)
    with pytest.raises(TransitionRefused):
        ts.set("all", ACTIVE, reason="back", origin="risk.disconnect", authority=LIFT)


def test_corrupt_file_starts_halted_and_keeps_the_bad_file(path):
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    ts = TradingStates.load(path)
    assert ts.get("all").state == HALTED and "corrupt" in ts.load_error
    assert any(p.name.startswith("risk.json.corrupt-") for p in path.parent.iterdir())
    assert TradingStates.load(path).get("all").state == HALTED  # the recovery halt was persisted


def test_unknown_state_in_file_is_corrupt(path):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "epoch": 3, "scopes": {"all": {"state": "PAUSED", "epoch": 3}}}))
    assert TradingStates.load(path).get("all").state == HALTED


def test_lowering_is_refused_when_it_cannot_be_persisted_but_halting_still_applies(path, monkeypatch):
    ts = TradingStates.load(path)
    ts.set("all", HALTED, reason="kill", origin="cli", authority=OP)

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("actors.risk.trading_state.write_json_atomic", disk_full)
    with pytest.raises(PersistError):
        ts.set("all", ACTIVE, reason="resume", origin="cli", authority=OP)
    assert ts.get("all").state == HALTED and ts.epoch == 1
    change = ts.set("strategy:a", HALTED, reason="r", origin="o", authority=OP)
    assert change is not None and not change.persisted and ts.get("strategy:a").state == HALTED
    monkeypatch.undo()
    assert TradingStates.load(path).get("all").state == HALTED


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x.json"
    for i in range(5):
        write_json_atomic(target, {"i": i})
    assert json.loads(target.read_text()) == {"i": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_disabled_strategies_persist(path):
    ts = TradingStates.load(path)
    assert ts.disable("alpha", "5 fills in 1s")
    assert not ts.disable("alpha", "again")
    assert TradingStates.load(path).disabled == {"alpha": "5 fills in 1s"}
    assert ts.enable("alpha") and not ts.enable("alpha")
    assert TradingStates.load(path).disabled == {}


def test_a_restart_announces_each_restored_restriction_once_and_never_a_change_already_announced(path):
    """The governor announces what it restored from disk at its start; a change it applied before that hook (the
    gateway's latch at the first heartbeat) was announced when it happened and is not announced a second time."""
    from actors.risk.state_keeper import TradingStateKeeper

    TradingStates.load(path).set("strategy:alpha", HALTED, reason="kill k1", origin="cli", authority=OP)
    published = []
    keeper = TradingStateKeeper.load(path, lambda topic, ev: published.append(ev))
    keeper.mirror_gateway_latch(frozenset({"all"}), frozenset(), "halt latch")  # before the start hook
    keeper.announce_restored()
    assert [(ev.scope, ev.state, ev.cause) for ev in published] == [
        ("all", "HALTED", "gateway_latch"), ("strategy:alpha", "HALTED", None)]
