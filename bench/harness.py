"""Shared helpers of the benchmark suite: statistics, open-loop load, child processes, the Khazad system, RSS,
results.

Everything the suite starts is a real process on 127.0.0.1 (ports from the OS), cleaned up on exit; timings use
CLOCK_MONOTONIC (``time.monotonic_ns``), which every process on one host shares, so a timestamp taken in one
process (an envelope's ``mono_ns``) can be subtracted from one taken in another.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bus import registry, topics

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Bounds for a benchmark's own set-up (processes coming up, orders reaching the simulator): generous, the
#: machine is small and often shared; a set-up that passes returns at once.
READY_TIMEOUT_S = 60.0
CHILD_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
#: Poll interval of set-up waits on other processes' state (a bounded readiness poll, not synchronisation).
POLL_S = 0.02

SYMBOL = "AAPL"
#: ``state(log_since=NO_LOG)`` leaves the simulator's request log out of its ground truth.
NO_LOG = 2**62
#: Poll interval for the simulator's ground truth (each state() serialises every order of the run).
SIM_POLL_S = 0.2
SIM_STATE_TIMEOUT_S = 60.0
SIM_STATE_ATTEMPTS = 3
#: Resting limit orders far below the market (AAPL starts near 190 in the simulator): they work and never fill.
FAR_LIMIT = 100.0
#: Symbols a market-data flood cycles through (all known to the simulator).
FLOOD_SYMBOLS = ("MSFT", "SPY", "NVDA", "NESN")


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (the project's one helper, :func:`bus.sockets.free_tcp_ports`)."""
    from bus.sockets import free_tcp_ports

    return free_tcp_ports(n)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted), ``q`` in [0, 1]; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary_ms(samples_ns: Iterable[int | float]) -> dict[str, float]:
    """n, p50, p99, p99.9, mean and max of nanosecond samples, in milliseconds."""
    v = sorted(x / 1e6 for x in samples_ns)
    if not v:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "p999_ms": float("nan"),
                "mean_ms": float("nan"), "max_ms": float("nan")}
    return {"n": len(v), "p50_ms": percentile(v, 0.50), "p99_ms": percentile(v, 0.99),
            "p999_ms": percentile(v, 0.999), "mean_ms": statistics.fmean(v), "max_ms": v[-1]}


def machine_info() -> dict[str, Any]:
    import msgspec
    import zmq

    return {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgspec": msgspec.__version__, "loadavg": os.getloadavg()}


def read_rss(pid: int) -> dict[str, int]:
    """Resident set size now and its peak (``VmRSS``/``VmHWM`` from /proc, kB); {} if the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out["rss_kb" if key == "VmRSS" else "hwm_kb"] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return out


def write_results(doc: dict[str, Any], path: Path | None = None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = path or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    return out


# ---------------------------------------------------------------------------------------------------------------
# open-loop load
# ---------------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by process ``pid`` (every thread; None: this process)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time per order of each process of a system (and of this one, the strategy or the ib_insync client):
    what an order costs each hop, whatever the machine's other load does to latencies (issue 18)."""

    def __init__(self, pids: dict[str, int], this: str) -> None:
        self.pids = pids
        self.this = this
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {self.this: cpu_seconds()}
        for name, pid in self.pids.items():
            try:
                out[name] = cpu_seconds(pid)
            except OSError:  # a process that went away is not measured
                pass
        return out

    def start(self) -> None:
        self._start = self._read()

    def per_order_ms(self, orders: int) -> dict[str, float]:
        end = self._read()
        out = {n: round((end[n] - self._start[n]) * 1e3 / max(1, orders), 3) for n in end if n in self._start}
        out["total"] = round(sum(out.values()), 3)
        return out


async def open_loop(rate_per_s: float, count: int, send: Callable[[int], Awaitable[Any] | None]) -> float:
    """Call ``send(i)`` for i in 0..count-1 at ``rate_per_s``, whatever the replies do (open loop): each call is
    started at its scheduled time (or at once when the generator is behind) and never awaited here; coroutines
    become tasks. Returns the offered duration in seconds (first to last send)."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate_per_s
    tasks: set[asyncio.Task[Any]] = set()
    start = loop.time()
    for i in range(count):
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # the load generator's send schedule (a timer), not synchronisation
        result = send(i)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    elapsed = loop.time() - start
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


async def wait_until(check: Callable[[], Any], what: str, timeout: float = READY_TIMEOUT_S,
                     interval: float = POLL_S) -> Any:
    """Await ``check()`` (sync or async) becoming truthy, bounded; a readiness poll of other processes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        await asyncio.sleep(interval)  # bounded readiness poll of another process's state


def wait_until_sync(check: Callable[[], Any], what: str, timeout: float = READY_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        time.sleep(POLL_S)  # bounded readiness poll of another process's state


# ---------------------------------------------------------------------------------------------------------------
# helper child processes (``python -m bench.roles <role> ...``) with a line protocol on stdin/stdout
# ---------------------------------------------------------------------------------------------------------------


#: Roles that never read stdin (they sit in libzmq loops): stopped with SIGTERM straight away.
SIGTERM_ROLES = frozenset({"raw-proxy", "bare-echo", "bare-orders"})


class Child:
    """A helper process that says words (``ready``, ``done``, a JSON result) on stdout and listens on stdin."""

    def __init__(self, *args: str, module: str = "bench.roles", env: dict[str, str] | None = None) -> None:
        self.args = args
        environ = dict(os.environ, **(env or {}))
        environ.pop("KHAZAD_CONFIG", None)
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=environ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = CHILD_TIMEOUT_S) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TimeoutError(f"bench child {self.args[:1]} said nothing within {timeout:g}s")
        finally:
            sel.close()
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"bench child {self.args[:1]} exited ({self.proc.wait(STOP_TIMEOUT_S)})")
        return text.strip()

    def expect(self, word: str, timeout: float = CHILD_TIMEOUT_S) -> None:
        got = self.line(timeout)
        if got != word:
            raise RuntimeError(f"bench child {self.args[:1]} said {got!r}, expected {word!r}")

    def result(self, timeout: float = CHILD_TIMEOUT_S) -> Any:
        return json.loads(self.line(timeout))

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            if not (self.args and self.args[0] in SIGTERM_ROLES):
                try:
                    self.proc.wait(STOP_TIMEOUT_S)  # a closed stdin ends a role cleanly (its sockets, its client)
                except subprocess.TimeoutExpired:
                    pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def role_io() -> tuple[Callable[[str], None], Callable[[], str]]:
    """(say, hear) for the child side of :class:`Child`."""

    def say(word: str) -> None:
        print(word, flush=True)

    def hear() -> str:
        return sys.stdin.readline().strip()

    return say, hear


# ---------------------------------------------------------------------------------------------------------------
# the Khazad system: simulator + proxy + actors, as real processes
# ---------------------------------------------------------------------------------------------------------------

#: The benchmark configuration on top of tests.support.config.write_config (free ports, run dir, approval key):
#: pacing raised for the benchmark only (IB accepts 50 msg/s; these rates measure Khazad's own overhead), risk
#: limits relaxed so every order is approved (the figure is the path's cost, not a limit's verdict).
BENCH_CONFIG = """
[gateway]
mode = "sim"
port = {sim_port}
client_id = 7
pacing_per_s = 10000
kill_verify_timeout_s = 30.0

[risk]
stale_data_s = 3600
reject_rate_min_orders = 1000000

[risk.limits]
max_orders_per_second = 1000000
duplicate_window_s = 0
max_position = 1000000000
max_gross_exposure = 1000000000000
max_order_notional = 1000000000
price_collar_pct = 90
min_buying_power_ratio = 0
"""

#: The production heartbeat interval (bus.heartbeat_interval_s default).
HEARTBEAT_S = 0.5
#: the actors a benchmark system starts after the proxy (every other actor of the registry)
ACTORS = tuple(a.name for a in registry.ACTORS if a is not registry.PROXY)
WORKING_AT_SIM = ("PreSubmitted", "Submitted", "PendingCancel", "PendingSubmit", "ApiPending")


@dataclass
class System:
    """A running Khazad system for a benchmark (see :func:`running_system`)."""

    tmp: Path
    config_path: Path
    cfg: Any
    sim: Any
    procs: dict[str, Any] = field(default_factory=dict)
    wall_minus_mono_s: float = 0.0

    def pids(self) -> dict[str, int]:
        out = {"sim": self.sim.proc.pid}
        out.update({name: p.pid for name, p in self.procs.items()})
        return out

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {n} ---\n{p.log()[-tail:]}" for n, p in self.procs.items())

    def sim_orders(self) -> dict[str, dict]:
        """The simulator's ground truth (its control API), without the request log (it holds every request of the
        run). Used once per measurement, never in a tight loop: a busy simulator answers its control API late."""
        from sim.control import ControlError, control_request

        for attempt in range(SIM_STATE_ATTEMPTS):
            try:
                return control_request(self.sim.control_port, "state", {"log_since": NO_LOG},
                                       timeout=SIM_STATE_TIMEOUT_S)["orders"]
            except ControlError:
                if attempt == SIM_STATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def sim_working(self) -> int:
        return sum(1 for o in self.sim_orders().values() if o["status"] in WORKING_AT_SIM)

    def wall_to_mono_ns(self, wall_s: float) -> int:
        """A simulator wall-clock time (its realtime clock is ``time.time()``) on this host's CLOCK_MONOTONIC."""
        return int((wall_s - self.wall_minus_mono_s) * 1e9)


def _wall_minus_mono() -> float:
    best = None
    for _ in range(5):  # the pair read closest together
        m0 = time.monotonic()
        w = time.time()
        m1 = time.monotonic()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) / 2)
    assert best is not None
    return best[1]


@contextmanager
def running_system(tmp: Path, *, actors: Iterable[str] = ACTORS, log_level: str = "INFO",
                   sim_overrides: dict[str, Any] | None = None, strategies: tuple[str, ...] = ()) -> Iterator[System]:
    """Start the simulator (own process, realtime clock, its pacing limit off), the proxy and ``actors``; wait
    until the gateway is READY, the governor ready and the order manager reconciled. Stops everything on exit.
    ``strategies``: more strategy keys for the authenticated bus (beyond the test configs' own)."""
    import zmq

    from bus.codec import Stamper
    from bus.messages import GetRiskState, GetStatus
    from bus.retry import RequestTimeout
    from sim.testing import SimProcess, sim_args
    from tests.support.clients import sync_client, sync_subscriber
    from tests.support.config import cfg_of, write_config
    from tests.support.processes import ActorProcess, wait_serving

    actors = tuple(actors)
    tmp.mkdir(parents=True, exist_ok=True)
    sim = SimProcess(sim_args(**{"clock": "realtime", "pacing_limit": 0, "log_level": "WARNING", "seed": 7,
                                 **(sim_overrides or {})})).wait_ready()
    ctx = zmq.Context()
    system = None
    try:
        path = write_config(tmp, extra=BENCH_CONFIG.format(sim_port=sim.port), strategies=strategies)
        cfg = cfg_of(path)
        system = System(tmp=tmp, config_path=path, cfg=cfg, sim=sim, wall_minus_mono_s=_wall_minus_mono())
        # production heartbeat (tests.support.config.write_config sets 0.2 s for fast tests): a busy gateway must not look
        # dead to the governor's disconnect breaker sooner than it would in production
        env = {"KHAZAD__LOGGING__LEVEL": log_level, "KHAZAD__BUS__HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S)}
        system.procs["proxy"] = ActorProcess(registry.PROXY.module, path, name="proxy", env=env).start()
        sub = sync_subscriber(ctx, cfg, [topics.heartbeat("proxy")], name="bench-proxy-ready")
        try:
            if sub.recv(READY_TIMEOUT_S) is None:
                raise TimeoutError(f"bus proxy did not come up:\n{system.logs()}")
        finally:
            sub.close()
        for name in actors:
            system.procs[name] = ActorProcess(registry.spec(name).module, path, name=name, env=env).start()
        for name in actors:
            wait_serving(ctx, cfg.bus.service_endpoint(name), system.procs[name], READY_TIMEOUT_S)

        def status(service: str, body: Any) -> Any:
            cl = sync_client(ctx, cfg, service, stamper=Stamper("bench-ready"), timeout_s=1.0, retries=0)
            try:
                return cl.call(body)
            except RequestTimeout:
                return None
            finally:
                cl.close()

        if "gateway" in actors:
            wait_until_sync(lambda: getattr(status("gateway", GetStatus()), "connection", "") == "READY",
                            "gateway READY")
        if "risk" in actors:
            wait_until_sync(lambda: getattr(status("risk", GetRiskState()), "ready", False), "risk governor ready")
        if "orders" in actors:
            wait_until_sync(lambda: getattr(status("orders", GetStatus()), "detail", {}).get("ready") == "true",
                            "order manager ready")
        yield system
    except BaseException:
        if system is not None:
            print(f"bench: system logs (tail):\n{system.logs()}", file=sys.stderr)
        raise
    finally:
        if system is not None:
            for p in reversed(list(system.procs.values())):
                p.stop()
        ctx.destroy(linger=0)
        sim.stop()
