"""Issue 14, item 9: the multi-host deployment of docs/operations.md, for real.

Two network namespaces joined by a veth pair with the project's own private test addresses (node A 10.213.0.1,
node B 10.213.0.2, a /30). Node A runs the whole system (``run_all.py``, the bus bound on A's veth address with
``bus.allow_non_loopback = true``); node B holds only its own key pairs and the servers' public keys (made on A by
``khazad keys create ... --out``, the operator's allow-list entries added while A runs), and runs a strategy and the
operator's CLI over TCP. ``khazad kill`` from B halts trading and leaves zero working orders at the simulator (its
state read on A); a process on B without an allowed key gets no answer.

Creating namespaces needs root (CI runs as root); elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.config import REPO, cfg_of, write_config
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)

#: the project's private test subnet: 10.213.0.0/30 (A .1, B .2), inside namespaces of our own only
NODE_A, NODE_B, PREFIX = "10.213.0.1", "10.213.0.2", 30
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 90.0
#: a BUY limit this far below the market (AAPL near 190) rests at the simulator, inside the widened collar
RESTING_LIMIT = 100.0
REMOTE_STRATEGY = "remote1"
REMOTE_OPERATOR = "alice"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root): run `make test` as root to include this test"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


@dataclass
class Nodes:
    a: str
    b: str


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    why = _why_no_namespaces()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    n = Nodes(a=f"khz-a-{tag}", b=f"khz-b-{tag}")
    made: list[str] = []
    try:
        for ns in (n.a, n.b):
            added = _ip("netns", "add", ns, check=False)
            if added.returncode != 0:
                pytest.skip(f"`ip netns add` failed here: {added.stderr.strip()}")
            made.append(ns)
        veth_a, veth_b = f"kva{tag}", f"kvb{tag}"
        _ip("link", "add", veth_a, "netns", n.a, "type", "veth", "peer", "name", veth_b, "netns", n.b)
        for ns, dev, addr in ((n.a, veth_a, NODE_A), (n.b, veth_b, NODE_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield n
    finally:
        for ns in made:  # whatever still runs in a namespace is ours: stop it, then remove the namespace (and veth)
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            _ip("netns", "delete", ns, check=False)


def _in(ns: str, *argv: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KHAZAD")}
    full.update(env or {})
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *argv], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=REPO, env=full, **kw)


def _popen_in(ns: str, argv: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KHAZAD") and k != "PYTHONPATH"}
    full.update(env or {})
    with open(out, "wb") as fh:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *argv], stdout=fh,
                                stderr=subprocess.STDOUT, cwd=REPO, env=full)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _node_a_config(tmp: Path) -> Path:
    """The serving host's configuration: every endpoint on A's veth address, CURVE keys made by the test helpers."""
    (tmp / "a").mkdir()
    path = write_config(tmp / "a", extra="[strategy]\nenabled = false\n\n[risk.limits]\nprice_collar_pct = 60\n")
    text = path.read_text().replace("tcp://127.0.0.1:", f"tcp://{NODE_A}:")
    path.write_text(text.replace("[bus]\n", "[bus]\nallow_non_loopback = true\n", 1))
    return path


def _node_b_config(a_config: Path, tmp: Path) -> Path:
    """Node B: the same endpoints, its own run directory (only its keys and the servers' public keys)."""
    b = tmp / "b"
    b.mkdir()
    path = b / "khazad.toml"
    text = a_config.read_text()
    path.write_text(text.replace(f'run_dir = "{cfg_of(a_config).run_dir}"', f'run_dir = "{b / "run"}"'))
    return path


def _sim_state(ns: str, control_port: int) -> dict:
    """The simulator's ground truth, asked from inside node A (its control API listens on A's loopback)."""
    code = ("import json,sys; from sim.control import control_request; "
            f"print(json.dumps(control_request({control_port}, 'state')))")
    proc = _in(ns, "-c", code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_kill_from_a_second_node_halts_and_leaves_nothing_working(nodes: Nodes, tmp_path: Path) -> None:
    a_config = _node_a_config(tmp_path)
    cfg_a = cfg_of(a_config)
    out_a = tmp_path / "node-a.out"
    system = _popen_in(nodes.a, [str(REPO / "run_all.py"), "--config", str(a_config), "--timeout",
                                 str(START_TIMEOUT_S), "--exit-on-timeout"], out_a)
    strategy: subprocess.Popen[bytes] | None = None
    try:
        eventually(lambda: "Khazad is up" in out_a.read_text() or system.poll() is not None, START_TIMEOUT_S + 10,
                   message=lambda: f"node A healthy:\n{out_a.read_text()[-3000:]}")
        assert system.poll() is None, out_a.read_text()[-3000:]
        # the operator (on A) allows B's strategy and operator while A runs; B receives its own key pairs and the
        # servers' public keys, and nothing else
        b_config = _node_b_config(a_config, tmp_path)
        b_keys = cfg_of(b_config).path("keys")
        for name, role in ((REMOTE_STRATEGY, "strategy"), (REMOTE_OPERATOR, "operator")):
            made = _in(nodes.a, "-m", "cli", "--config", str(a_config), "keys", "create", name, "--role", role,
                       "--out", str(b_keys))
            assert made.returncode == 0, made.stdout + made.stderr
        assert not [p.name for p in b_keys.glob("*.key_secret") if p.stem not in (REMOTE_STRATEGY, REMOTE_OPERATOR)]

        # a process on B without an allowed key gets no answer (and with B's operator key it does: B reaches A)
        probe = _in(nodes.b, "-m", "tests.support.programs.remote_probe", "--config", str(b_config))
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert json.loads(probe.stdout.strip().splitlines()[-1]) == {
            "plain_gateway": False, "unlisted_key_gateway": False, "listed_key_gateway": True,
            "plain_proxy_heartbeat": False}

        # a strategy on B places resting orders over TCP
        out_s = tmp_path / "strategy-b.out"
        strategy = _popen_in(nodes.b, ["-m", "tests.support.programs.remote_strategy", "--config", str(b_config),
                                       "--strategy", REMOTE_STRATEGY, "--orders", "3", "--limit",
                                       str(RESTING_LIMIT)], out_s)
        line = eventually(lambda: next((ln for ln in out_s.read_text().splitlines() if ln.startswith('{"refs"')),
                                       None) or (strategy.poll() is not None and out_s.read_text()), 90,
                          message=lambda: f"the strategy on B placed its orders:\n{out_s.read_text()[-3000:]}")
        refs = json.loads(line)["refs"]
        working = {o["orderRef"] for o in _sim_state(nodes.a, cfg_a.sim.control_port)["orders"].values()
                   if o["status"] in ("PreSubmitted", "Submitted")}
        assert set(refs) <= working

        # the operator kills from B
        operator = {"KHAZAD__BUS__CURVE__KEY_NAME": REMOTE_OPERATOR}
        killed = _in(nodes.b, "-m", "cli", "--config", str(b_config), "kill", "--reason", "two-node test", "--json",
                     env=operator)
        assert killed.returncode == 0, killed.stdout + killed.stderr
        doc = json.loads(killed.stdout)
        assert doc["confirmed"] and doc["gateway"]["reply"]["trading_state"] == "HALTED", doc
        state = _sim_state(nodes.a, cfg_a.sim.control_port)
        still = [o["orderRef"] for o in state["orders"].values()
                 if o["status"] in ("PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel")]
        assert still == [], still
        status = _in(nodes.b, "-m", "cli", "--config", str(b_config), "status", "--json", env=operator)
        assert json.loads(status.stdout)["trading_state"] == "HALTED", status.stdout + status.stderr
        assert strategy.poll() is None, out_s.read_text()[-2000:]  # the strategy itself keeps running, halted
    finally:
        if strategy is not None:
            _stop(strategy, signal.SIGTERM)
        code = _stop(system)
    assert code == 0, out_a.read_text()[-3000:]
    assert "stopped cleanly" in out_a.read_text()
