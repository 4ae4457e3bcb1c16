"""Issue 14, items 1 and 8, the findings made with CURVE turned on: a key's role came from what its owner wrote
into the public key file, and ``run_all.py``'s health check connected without a key (so a healthy authenticated
system was reported "not healthy after 90s").

The whole system as ``khazad run`` starts it, with ``bus.curve.enabled = true`` spelt out, and the keys made by
``khazad keys init``. Before it starts, the owner of strategy ``momo``'s key edits its key files to say
``role = "actor"``, ``name = "orders"``: everything they hold is theirs to write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus.approval import load_approval_key, sign
from bus.config import load_config
from bus.messages import CheckOrder, Rejected, SubmitOrder
from tests.support.local_process import client, khazad, order, sim_refs
from tests.support.system import System, running_system

pytestmark = pytest.mark.timeout(240)

EXTRA = """
[bus.curve]
enabled = true

[strategy]
enabled = false
"""
#: a healthy system is up well within this; without keys the health check never passes
START_TIMEOUT_S = 60.0
ROLE_ORDERS = 'metadata\n    role = "actor"\n    name = "orders"\n'


def _keys_made_and_momo_edited(path: Path, text: str) -> str:
    """Before the system starts: the operator runs `khazad keys init`; momo's owner edits momo's key files."""
    made = khazad(path, "keys", "init", "--strategy", "momo")
    assert made.returncode == 0, made.stdout + made.stderr
    keys = load_config(path, env={}).path("keys")
    for name in ("momo.key", "momo.key_secret"):
        f = keys / name
        body = re.sub(r"(?m)^metadata\n(?:    [^\n]*\n)*", "", f.read_text())  # whatever it said before
        f.write_text(body.replace("curve\n", ROLE_ORDERS + "curve\n", 1))
    return text


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("curve-findings")
    path = tmp / "khazad.toml"
    with running_system(tmp, extra=EXTRA, start_timeout_s=START_TIMEOUT_S,
                        edit_config=lambda text: _keys_made_and_momo_edited(path, text)) as s:
        yield s


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_strategy_key_edited_to_actor_orders_is_still_a_strategy(system: System, ctx: zmq.Context) -> None:
    spec = order("momo", "edited-1", qty=5)
    decision = client(ctx, system.cfg, "risk", "momo").call(CheckOrder(order=spec))
    approval = sign(load_approval_key(system.cfg), spec, ttl_s=10.0)
    submitted = client(ctx, system.cfg, "gateway", "momo").call(SubmitOrder(order=spec, approval=approval))
    assert isinstance(decision, Rejected) and decision.code == "unauthorized", decision
    assert "strategy:momo" in decision.reason
    assert isinstance(submitted, Rejected) and submitted.code == "unauthorized", submitted
    assert spec.order_ref not in sim_refs(system.sim())
    listed = khazad(system.config_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [ln for ln in listed.stdout.splitlines() if " momo " in ln]
    assert line.split()[0] == "strategy", line


def test_health_check_and_every_cli_command_work_on_the_authenticated_bus(system: System) -> None:
    # the fixture got here: run_all.py's health check reported the CURVE system healthy
    assert "Khazad is up" in system.output()
    for args in (("status",), ("orders", "--all"), ("positions",), ("account",), ("top", "--once"),
                 ("keys", "list")):
        proc = khazad(system.config_path, *args)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    killed = khazad(system.config_path, "kill", "--reason", "curve cli", "--json")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    doc = json.loads(killed.stdout)
    assert [doc[leg]["ok"] for leg in ("gateway", "risk", "bus")] == [True, True, True], doc
    resumed = khazad(system.config_path, "resume", "--reason", "curve cli done")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
