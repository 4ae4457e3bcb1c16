"""The gateway's safety guarantees in process (issue 12 item 7): the durable state file, the halt latch's keeper,
the kill switch, the cancel sweeps and the order table, each against real collaborators and an IB double (the
fast subset tools/mutate.py runs against the gateway's safety modules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway.halts import HaltLatch
from actors.gateway.persist import GatewayState, StateStore, atomic_write
from tests.fsync_spy import assert_atomic_durable_write, spy_on_disk

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
