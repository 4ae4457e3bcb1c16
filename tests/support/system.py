"""The whole system started as an operator starts it, for tests: ``run_all.py`` (supervisord, every actor, the TWS
simulator, optionally the example strategy) in a temporary directory on free ports, driven through supervisord's
XML-RPC, the actors' services and the simulator's control API.

Used by ``tests/system`` and ``tests/chaos``. ``running_system()`` owns every process it starts: on exit it stops
run_all.py the way Ctrl-C does and fails the test if anything is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from bus.config import KhazadConfig
from bus.messages import GetSystemStatus, SystemStatusReply
from bus.security import OPERATOR_KEY
from launch.xmlrpc import process_infos, supervisor_rpc
from sim.control import control_request
from tests.support.clients import sync_client
from tests.support.config import REPO, cfg_of, write_config
from tests.support.processes import process_alive, process_start_ticks
from tests.support.waiting import eventually

#: Bounds (generous: up to seven engineers share this 2-core machine). A passing wait returns at once.
START_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 60.0


@dataclass
class System:
    """A running system: its configuration, run_all.py's process and output, a zmq context for requests."""

    cfg: KhazadConfig
    config_path: Path
    proc: subprocess.Popen[bytes]
    out: Path
    ctx: zmq.Context
    started_s: float

    @property
    def rpc(self) -> Any:
        return supervisor_rpc(self.cfg.run_path / "supervisor.sock")

    def infos(self) -> dict[str, dict[str, Any]]:
        """supervisord's view of every program (``getAllProcessInfo`` by name)."""
        return process_infos(self.rpc)

    def call(self, service: str, body: Any, timeout_s: float = 3.0, retries: int = 1, key: str = OPERATOR_KEY) -> Any:
        """One request with the key ``key`` (the operator's by default, from the run's keys directory)."""
        client = sync_client(self.ctx, self.cfg, service, key=key, timeout_s=timeout_s, retries=retries)
        try:
            return client.call(body)
        finally:
            client.close()

    def status(self, timeout_s: float = 3.0) -> SystemStatusReply:
        reply = self.call("monitor", GetSystemStatus(), timeout_s=timeout_s)
        assert isinstance(reply, SystemStatusReply), reply
        return reply

    def sim(self) -> dict[str, Any]:
        """The simulator's ground truth (control API ``state``)."""
        return control_request(self.cfg.sim.control_port, "state")

    def sim_call(self, command: str, **args: Any) -> Any:
        return control_request(self.cfg.sim.control_port, command, args)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def log(self, program: str) -> str:
        try:
            return (self.cfg.run_path / "logs" / f"{program}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _infos_or_empty(s: System) -> dict[str, Any]:
    try:
        return s.infos()
    except OSError:
        return {}


@contextmanager
def running_system(tmp: Path, *, extra: str = "", edit_config: Callable[[str], str] | None = None,
                   start_timeout_s: float = START_TIMEOUT_S, command: list[str] | None = None) -> Iterator[System]:
    """Start ``run_all.py --config <tmp>/khazad.toml`` (free ports, run dir under ``tmp``; ``extra`` TOML is
    appended to the test config, then ``edit_config(text)`` may rewrite it), wait until it reports every
    actor healthy, yield the :class:`System`; on exit send SIGINT (what Ctrl-C does) and check that it stopped
    cleanly with nothing left running. ``command`` replaces ``python run_all.py`` (e.g. an installed
    ``khazad run``); it runs in ``tmp``, outside the checkout, without the caller's PYTHONPATH."""
    path = write_config(tmp, extra=extra)
    if edit_config is not None:
        path.write_text(edit_config(path.read_text()))
    cfg = cfg_of(path)
    out = tmp / "run_all.out"
    env = dict(os.environ)
    env.pop("KHAZAD_CONFIG", None)
    env.pop("PYTHONPATH", None)
    command = command or [sys.executable, str(REPO / "run_all.py")]
    with open(out, "wb") as fh:
        proc = subprocess.Popen([*command, "--config", str(path), "--timeout", str(start_timeout_s),
                                 "--exit-on-timeout"], stdout=fh, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                start_new_session=True)
    ctx = zmq.Context()
    s = System(cfg=cfg, config_path=path, proc=proc, out=out, ctx=ctx, started_s=time.monotonic())
    pids: dict[int, int | None] = {}  # pid -> start ticks: never signal a recycled pid that is not ours

    def note_pids() -> None:
        for info in _infos_or_empty(s).values():
            pid = int(info["pid"] or 0)
            if pid and pid not in pids:
                pids[pid] = process_start_ticks(pid)

    def ours(pid: int) -> bool:
        return process_alive(pid) and pids.get(pid) is not None and process_start_ticks(pid) == pids[pid]

    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run_all.py exited {proc.returncode}:\n{s.output()[-4000:]}")
            return "Khazad is up" in s.output()
        eventually(up, start_timeout_s + 10, message=lambda: f"run_all.py healthy; output:\n{s.output()[-3000:]}")
        note_pids()
        yield s
    finally:
        note_pids()
        for pid in pids:  # a stopped (SIGSTOP) program would never stop: let everything run again first
            if ours(pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        ctx.destroy(linger=0)
        leftovers = [p for p in pids if ours(p)]
        for p in leftovers:
            os.kill(p, signal.SIGKILL)
        assert proc.returncode == 0, f"run_all.py exited {proc.returncode}:\n{s.output()[-3000:]}"
        assert not leftovers, f"processes left running after Ctrl-C: {leftovers}"
        assert "stopped cleanly" in s.output()
