"""Shared test helpers: free ports, event-driven waiting, config files, actor processes.

Everything here cleans up after itself: sockets are closed with linger 0, processes are terminated (then killed)
at teardown, and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import zmq

from bus import registry
from bus.approval import write_approval_key
from bus.codec import Stamper
from bus.config import KhazadConfig, load_config
from bus.sockets import free_tcp_ports

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Default bound for eventually(): generous for a loaded 2-core CI machine; a passing wait returns at once.
EVENTUALLY_TIMEOUT_S = 10.0
#: How long a started actor process may take to answer its first Ping.
PROCESS_READY_TIMEOUT_S = 20.0
PROCESS_STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    return free_tcp_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so they cannot repeat)."""
    return free_tcp_ports(n)


def eventually(predicate: Callable[[], T], timeout: float = EVENTUALLY_TIMEOUT_S, interval: float = 0.005,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Wait until ``predicate()`` returns something truthy, and return it; fail the test after ``timeout``.

    This polls a condition with a bounded wait; it never sleeps a fixed time and hopes. The interval grows to
    at most 50 ms so a slow condition does not burn the CPU the system under test needs.
    """
    deadline = time.monotonic() + timeout
    wait = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = message() if callable(message) else message
            raise AssertionError(f"eventually(): {msg} within {timeout:.1f}s")
        wait.wait(interval)
        interval = min(interval * 2, 0.05)


def write_config(tmp: Path, *, extra: str = "", ports: dict[str, int] | None = None) -> Path:
    """Write a khazad.toml for a test: free ports everywhere, run_dir under ``tmp``, an approval key."""
    names = list(registry.ENDPOINT_FIELDS)
    ports = dict(ports or {})
    fresh = iter(free_ports(len(names) + 3))
    for n in names + ["sim", "sim_control", "metrics"]:
        ports.setdefault(n, next(fresh))
    bus = "\n".join(f'{n} = "tcp://127.0.0.1:{ports[n]}"' for n in names)
    text = f"""
run_dir = "{tmp / 'run'}"

[bus]
{bus}
heartbeat_interval_s = 0.2
request_timeout_s = 2.0

[sim]
port = {ports['sim']}
control_port = {ports['sim_control']}

[monitor]
metrics_port = {ports['metrics']}

[logging]
level = "DEBUG"
{extra}
"""
    path = tmp / "khazad.toml"
    path.write_text(text)
    cfg = load_config(path, env={})
    write_approval_key(cfg.path(cfg.risk.approval_key_file))
    return path


class ActorProcess:
    """A real actor process (``python -m <module> --config <path>``) with its output captured to a file."""

    def __init__(self, module: str, config: Path, *, name: str | None = None, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.module = module
        self.config = config
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = config.parent / f"{self.name}.log"
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("KHAZAD_CONFIG", None)
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ActorProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, "--config", str(self.config), *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = PROCESS_STOP_TIMEOUT_S) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(PROCESS_STOP_TIMEOUT_S)


def ping(ctx: zmq.Context, endpoint: str, timeout_s: float = 0.5) -> Any:
    """One Ping to a service; returns the reply body or None if it did not answer."""
    from bus.messages import Ping
    from bus.reqrep import RequestTimeout, SyncClient

    cl = SyncClient(ctx, endpoint, service="ping", stamper=Stamper("test-ping"), timeout_s=timeout_s, retries=0)
    try:
        return cl.call(Ping())
    except RequestTimeout:
        return None
    finally:
        cl.close()


def wait_serving(ctx: zmq.Context, endpoint: str, proc: ActorProcess | None = None,
                 timeout: float = PROCESS_READY_TIMEOUT_S) -> Any:
    """Wait until the service at ``endpoint`` answers Ping (failing early if its process died)."""

    def check() -> Any:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()[-4000:]}")
        return ping(ctx, endpoint, 0.3)

    return eventually(check, timeout, message=lambda: f"{endpoint} did not answer Ping"
                      + (f"; log:\n{proc.log()[-3000:]}" if proc else ""))


def cfg_of(path: Path) -> KhazadConfig:
    return load_config(path, env={})
