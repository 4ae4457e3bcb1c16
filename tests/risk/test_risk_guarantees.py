"""Risk's safety guarantees in process (issue 12 item 7): the trading-state file is durable before a change is
announced (fsync of the full content before the rename, the folder after), and a HALT survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.risk.trading_state import HALTED, Authority, TradingStates, write_json_atomic
from tests.fsync_spy import assert_atomic_durable_write, spy_on_disk


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = (tmp_path / "state" / "risk.json").resolve()
    p.parent.mkdir(parents=True)
    return p


def test_write_json_atomic_fsyncs_the_full_content_before_the_rename_and_the_folder_after(path: Path,
                                                                                         monkeypatch) -> None:
    # mutation caught: trading_state.write_json_atomic without `os.fsync(fd)` before os.replace
    path.write_text("{}")
    seen = spy_on_disk(monkeypatch)
    write_json_atomic(path, {"version": 1, "epoch": 7, "scopes": {}, "padding": "x" * 2000})
    assert_atomic_durable_write(seen, path)
    assert [p.name for p in path.parent.iterdir()] == ["risk.json"]


def test_a_halt_is_durable_before_set_returns(path: Path, monkeypatch) -> None:
    ts = TradingStates.load(path)
    ts.persist()
    seen = spy_on_disk(monkeypatch)
    change = ts.set("all", HALTED, reason="kill k1", origin="cli", authority=Authority.OPERATOR)
    assert change is not None and change.persisted
    assert_atomic_durable_write(seen, path)
    again = TradingStates.load(path)
    assert again.get("all").state == HALTED and again.epoch == 1 and again.get("all").reason == "kill k1"
