"""Helpers to run the simulator from tests anywhere in the project.

In-process (a background thread with its own event loop)::

    from sim.testing import running_sim

    with running_sim(seed=7) as sim:          # manual clock, free ports
        ib.connect(sim.host, sim.port, clientId=1)
        trade = ib.placeOrder(contract, MarketOrder("BUY", 100))
        sim.advance(1.0)                      # ticks + matching happen here
        sim.wait_for(lambda s: s["executions"], timeout=5)

As a separate process (``python -m sim``), for multi-process system tests::

    from sim.testing import running_sim_process

    with running_sim_process(seed=7) as sim:  # waits for "SIM READY ..."
        sim.call("advance", seconds=1)

Both clean up fully on exit (connections, listeners, thread or process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .config import SimConfig
from .control import ControlAPI, control_request

#: Seconds to wait for the server thread/process to come up or go down.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: Seconds a control call may take before the test is told.
CALL_TIMEOUT = 10.0
#: The line ``python -m sim`` prints on stdout once it accepts connections.
READY_PREFIX = "SIM READY"

#: Defaults for tests: deterministic clock, ephemeral ports, control API on.
TEST_DEFAULTS = dict(port=0, control_port=0, clock="manual")


class SimHandle:
    """A simulator running in a background thread; thread-safe sync API."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sim-server", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._changed = threading.Condition()
        self._version = 0
        self._stop: asyncio.Event | None = None
        self.server = None
        self.api: ControlAPI | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "SimHandle":
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError("simulator did not start")
        if self._startup_error is not None:
            raise RuntimeError("simulator failed to start") from self._startup_error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        from .server import SimServer
        try:
            self._stop = asyncio.Event()
            self.server = SimServer(self.config)
            await self.server.start()
            self.api = ControlAPI(self.server)
            self.server.add_change_callback(self._on_change)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():  # pragma: no cover - would leak a thread
            raise RuntimeError("simulator thread did not stop")

    def _on_change(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    # -- addresses ---------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def control_port(self) -> int | None:
        return self.server.control_port

    # -- control commands (thread-safe) ----------------------------------------

    def call(self, command: str, **args: Any) -> Any:
        """Run a control command on the server's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(self.api.call(command, **args), self._loop)
        return fut.result(CALL_TIMEOUT)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (read internal state safely)."""
        async def wrapper() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(CALL_TIMEOUT)

    def state(self, log_since: int = 0) -> dict:
        return self.call("state", log_since=log_since)

    def drop_connections(self, reason: str = "daily restart") -> dict:
        return self.call("drop_connections", reason=reason)

    def refuse_connections(self, seconds: float | None = None) -> dict:
        return self.call("refuse_connections", seconds=seconds)

    def accept_connections(self) -> dict:
        return self.call("accept_connections")

    def daily_restart(self, seconds: float = 60.0) -> dict:
        return self.call("daily_restart", seconds=seconds)

    def connectivity(self, codes: list[int] | None = None, interval: float = 1.0,
                     lost_for: float | None = None, restore: int = 1102) -> dict:
        return self.call("connectivity", codes=codes, interval=interval, lost_for=lost_for,
                         restore=restore)

    def reject_next_orders(self, n: int = 1, code: int = 201,
                           reason: str | dict | None = None) -> dict:
        return self.call("reject_next_orders", n=n, code=code, reason=reason)

    def reject_next_amendments(self, n: int = 1, code: int = 110, message: str | None = None) -> dict:
        return self.call("reject_next_amendments", n=n, code=code,
                         **({} if message is None else {"message": message}))

    def ack_delay(self, seconds: float) -> dict:
        return self.call("ack_delay", seconds=seconds)

    def drop_acks(self, n: int = 1) -> dict:
        return self.call("drop_acks", n=n)

    def sticky_presubmitted(self, n: int | None = None, fraction: float | None = None) -> dict:
        return self.call("sticky_presubmitted", n=n, fraction=fraction)

    def correct_execution(self, exec_id: str = "last", price: float | None = None,
                          shares: float | None = None) -> dict:
        return self.call("correct_execution", exec_id=exec_id, price=price, shares=shares)

    def pacing_limit(self, n: int) -> dict:
        return self.call("pacing_limit", n=n)

    def market_data(self, state: str, symbols: list[str] | None = None) -> dict:
        return self.call("market_data", state=state, symbols=symbols)

    def history_pacing(self, mode: str) -> dict:
        return self.call("history_pacing", mode=mode)

    def set_price(self, symbol: str, bid: float | None = None, ask: float | None = None,
                  last: float | None = None) -> dict:
        return self.call("set_price", symbol=symbol, bid=bid, ask=ask, last=last)

    def fill(self, perm_id: int, quantity: float | None = None, price: float | None = None) -> dict:
        return self.call("fill", perm_id=perm_id, quantity=quantity, price=price)

    def advance(self, seconds: float) -> dict:
        return self.call("advance", seconds=seconds)

    def market_hours(self, mode: str) -> dict:
        return self.call("market_hours", mode=mode)

    def order_notice(self, perm_id: int, code: int, message: str | None = None) -> dict:
        return self.call("order_notice", perm_id=perm_id, code=code, message=message)

    def manual_order(self, symbol: str, action: str, quantity: float, order_type: str = "LMT",
                     lmt_price: float | None = None, aux_price: float | None = None, tif: str = "DAY",
                     order_ref: str = "", outside_rth: bool = False) -> dict:
        return self.call("manual_order", symbol=symbol, action=action, quantity=quantity,
                         order_type=order_type, lmt_price=lmt_price, aux_price=aux_price, tif=tif,
                         order_ref=order_ref, outside_rth=outside_rth)

    def cancel(self, perm_id: int) -> dict:
        return self.call("cancel", perm_id=perm_id)

    def precautions(self, **settings: float | None) -> dict:
        return self.call("precautions", **settings)

    def tif_preset(self, tif: str = "") -> dict:
        return self.call("tif_preset", tif=tif)

    def status(self) -> dict:
        return self.call("status")

    def clear_faults(self) -> dict:
        return self.call("clear_faults")

    def reset(self) -> dict:
        return self.call("reset")

    # -- waiting -----------------------------------------------------------------

    def wait_for(self, predicate: Callable[[dict], Any], timeout: float = 5.0,
                 what: str = "condition") -> dict:
        """Block until ``predicate(state)`` is truthy; returns that state.

        Wakes on every server-side change (message processed, command run)
        instead of polling on a timer.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._version
            snapshot = self.state()
            if predicate(snapshot):
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            with self._changed:
                self._changed.wait_for(lambda: self._version != seen, remaining)


@contextmanager
def running_sim(**overrides: Any) -> Iterator[SimHandle]:
    """Run a simulator in a background thread for the duration of the block.

    Defaults: manual clock, ephemeral API and control ports on 127.0.0.1.
    Any ``SimConfig`` field can be overridden.
    """
    config = SimConfig(**{**TEST_DEFAULTS, **overrides})
    handle = SimHandle(config)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


class SimProcess:
    """``python -m sim`` as a child process, controlled over HTTP."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.host = "127.0.0.1"
        self.port = 0
        self.control_port = 0
        self.ready_info: dict[str, str] = {}
        self._stderr_lines: list[str] = []
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr_lines)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "SimProcess":
        """Read stdout until the readiness line (parsed for the ports)."""
        result: dict[str, str] = {}

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith(READY_PREFIX):
                    result.update(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            self.stop()
            raise TimeoutError(f"python -m sim did not become ready; stderr:\n{self.stderr}")
        self.port = int(result["port"])
        self.control_port = int(result.get("control_port") or 0)
        #: every key=value of the readiness line (port, control_port, latency, market_hours)
        self.ready_info = dict(result)
        return self

    def call(self, command: str, **args: Any) -> Any:
        return control_request(self.control_port, command, args, host=self.host)

    def state(self) -> dict:
        return self.call("state")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def sim_args(**overrides: Any) -> list[str]:
    """Command-line arguments for ``python -m sim`` from SimConfig-style keys."""
    opts = {"port": 0, "control_port": 0, "clock": "manual", **overrides}
    flags = {"base_currency": "currency"}
    args: list[str] = []
    for key, value in opts.items():
        if value is None:
            continue
        args += [f"--{flags.get(key, key).replace('_', '-')}", str(value)]
    return args


@contextmanager
def running_sim_process(**overrides: Any) -> Iterator[SimProcess]:
    """Run ``python -m sim`` for the block; defaults like ``running_sim``."""
    proc = SimProcess(sim_args(**overrides))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
