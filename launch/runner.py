"""One run of the whole system, in the foreground (``khazad run``, ``python run_all.py``, ``make run``).

What it does:

1. writes the run directory (default ``./run``): ``khazad.toml`` (generated unless ``--config`` is given), the
   approval signing key (``secrets/approval.key``, mode 0600, kept across runs), ``supervisord.conf`` rendered
   from the package's template, ``logs/``, ``state/`` and ``conf.d/`` (extra programs);
2. checks the gateway settings for the mode before anything starts (paper and live need an account; live needs
   ``KHAZAD_LIVE_CONFIRM``; there is never a fallback to the simulator);
3. runs ``supervisord -n`` in its own session, waits (bounded) until the monitor reports every expected actor
   alive and the gateway READY, and prints where things are and how to send a kill;
4. keeps watching supervisord's programs (state changes are printed) until Ctrl-C or SIGTERM, then stops
   everything cleanly: supervisord stops the programs in reverse priority order, each with its graceful bound.

Exit status: 0 after a clean stop; 1 when the system could not start (a program went FATAL, supervisord
died, or the health wait timed out with ``--exit-on-timeout``); 78 for a configuration error.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from launch.console import say, set_prog
from launch.health import Health, check_health
from launch.options import parse_args
from launch.plan import ConfigErrorExit, Plan, make_plan, preflight
from launch.supervisord import render
from launch.xmlrpc import process_infos, supervisor_rpc, supervisor_running

#: Bound for supervisord's clean shutdown (every program's stopwaitsecs is 10 s; most stop in well under 2 s).
SHUTDOWN_TIMEOUT_S = 90.0
#: How often the health wait asks the monitor, and how often the supervision loop looks at the programs.
HEALTH_POLL_S = 0.25
SUPERVISE_POLL_S = 1.0
#: Bound for supervisord's XML-RPC socket to appear after launch.
SUPERVISOR_START_TIMEOUT_S = 20.0
EXIT_STARTUP_FAILED = 1


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("      " + ln for ln in text.strip().splitlines()[-lines:])


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return None


class Runner:
    """One run: supervisord as a child in its own session, stopped on Ctrl-C/SIGTERM."""

    def __init__(self, plan: Plan, started: float) -> None:
        self.plan = plan
        self.started = started
        self.stop_requested = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.rpc: xmlrpc.client.ServerProxy | None = None
        self.last_states: dict[str, str] = {}
        self.pids: set[int] = set()

    def request_stop(self, signum: int, _frame: Any) -> None:
        if not self.stop_requested.is_set():
            print(flush=True)
            say(f"{signal.Signals(signum).name}: stopping everything (reverse start order) ...")
        self.stop_requested.set()

    def launch(self) -> None:
        out = open(self.plan.log_dir / "supervisord.out", "ab")
        env = dict(os.environ, KHAZAD_CONFIG=str(self.plan.config_path), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.plan.conf_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.plan.workdir,
            env=env,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + SUPERVISOR_START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"supervisord exited with {self.proc.returncode}:\n"
                    f"{log_tail(self.plan.log_dir / 'supervisord.out', 15)}"
                )
            if supervisor_running(self.plan.sock_path):
                self.rpc = supervisor_rpc(self.plan.sock_path)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"supervisord did not open {self.plan.sock_path} within {SUPERVISOR_START_TIMEOUT_S:g}s"
                )
            self.stop_requested.wait(0.05)  # bounded wait for the socket file (polled, not assumed)

    def note_states(self) -> dict[str, dict[str, Any]]:
        assert self.rpc is not None  # set once supervisord answers, before anything asks it
        infos = process_infos(self.rpc)
        for name, info in infos.items():
            state = info["statename"]
            if info.get("pid"):
                self.pids.add(int(info["pid"]))
            before = self.last_states.get(name)
            if before is not None and before != state:
                extra = f" (exit {info['exitstatus']})" if state == "EXITED" else ""
                say(f"{name}: {before} -> {state}{extra}")
                if state == "FATAL":
                    say(f"{name} is FATAL (supervisord gave up); last lines of {self.plan.log_dir / (name + '.log')}:")
                    print(log_tail(self.plan.log_dir / f"{name}.log"), flush=True)
            self.last_states[name] = state
        return infos

    def wait_healthy(self, timeout: float) -> Health:
        import zmq

        assert self.rpc is not None  # set by launch() once supervisord answers
        rpc = self.rpc
        zctx = zmq.Context()
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    return Health(False, ["supervisord exited"], [])
                self.note_states()
                health = check_health(self.plan.cfg, self.plan.programs, rpc, zctx)
                if health.ok or health.fatal or self.stop_requested.is_set():
                    return health
                now = time.monotonic()
                if now > deadline:
                    return health
                if now - last_report > 5.0:
                    say("waiting for: " + ", ".join(health.missing))
                    last_report = now
                self.stop_requested.wait(HEALTH_POLL_S)  # bounded poll of the monitor, wakes at once on Ctrl-C
        finally:
            zctx.destroy(linger=0)

    def print_summary(self, elapsed: float, settings: str) -> None:
        """The banner printed once every actor is healthy: where everything is and how to stop it."""
        plan = self.plan
        cfg = plan.cfg
        rel = _rel
        khazad = f"khazad --config {rel(plan.config_path)}"
        assert self.rpc is not None
        infos = process_infos(self.rpc)
        print(flush=True)
        say(f"Khazad is up: every actor healthy, gateway READY ({plan.mode} mode) in {elapsed:.1f}s")
        print(f"  gateway      {settings}")
        if plan.mode == "sim":
            print(f"  simulator    {simulator_summary(cfg)}")
        print(f"  run dir      {rel(plan.run_dir)}   (config {rel(plan.config_path)})")
        print(f"  logs         {rel(plan.log_dir)}/<program>.log")
        print(f"  dashboard    {khazad} top")
        print(f"  status       {khazad} status")
        print(f'  KILL SWITCH  {khazad} kill --reason "..."     (or press k in `khazad top`)')
        print(f'  resume       {khazad} resume --reason "..."')
        if cfg.monitor.metrics_port:
            print(f"  metrics      http://{cfg.monitor.metrics_host}:{cfg.monitor.metrics_port}/metrics")
        print(f"  supervisor   supervisorctl -c {rel(plan.conf_path)} status")
        print(
            "  processes    "
            + "  ".join(
                f"{n}:{i['pid']}({rss:.0f}MB)" if (rss := rss_mb(i["pid"])) else f"{n}:{i['statename']}"
                for n, i in infos.items()
            )
        )
        print("Ctrl-C stops everything.", flush=True)

    def supervise(self) -> int:
        while not self.stop_requested.is_set():
            if self.proc is not None and self.proc.poll() is not None:
                say(
                    f"supervisord exited unexpectedly ({self.proc.returncode}); see {self.plan.log_dir}/supervisord.log"
                )
                return EXIT_STARTUP_FAILED
            try:
                self.note_states()
            except (OSError, xmlrpc.client.Error) as exc:
                say(f"cannot reach supervisord: {exc}")
            self.stop_requested.wait(SUPERVISE_POLL_S)  # periodic look at the programs; wakes at once on Ctrl-C
        return 0

    def shutdown(self) -> bool:
        """Stop supervisord (it stops every program first); True when everything stopped in time."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        try:
            self.note_states()
        except (OSError, xmlrpc.client.Error):
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"supervisord did not stop within {SHUTDOWN_TIMEOUT_S:g}s: killing it and its programs")
            self.proc.kill()
            self.proc.wait(5)
        leftovers = [pid for pid in self.pids if _alive(pid)]
        for pid in leftovers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        if leftovers:
            say(f"killed leftover program process group(s): {leftovers}")
        return not leftovers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a recycled pid of someone else's is not ours to kill: it must be one of our interpreters
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return sys.executable.encode() in fh.read()
    except OSError:
        return False


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None, prog: str = "run_all") -> int:
    """``python run_all.py [flags]``: parse the flags and :func:`run`."""
    set_prog(prog)
    return run(parse_args(argv, "run_all.py" if prog == "run_all" else prog))


def run(args: argparse.Namespace) -> int:
    """One whole run (see :mod:`launch`); the exit status of ``khazad run`` and ``run_all.py``."""
    started = time.monotonic()
    try:
        # before anything is written: a running system's config and supervisord.conf must stay as they are
        run_dir = load_config(Path(args.config)).run_path if args.config else Path(args.run_dir).expanduser()
        pid = supervisor_running(run_dir.resolve() / "supervisor.sock")
        if pid:
            say(
                f"Khazad is already running from {run_dir} (supervisord pid {pid}). Watch it with "
                f"`khazad --config {_rel(run_dir.resolve() / 'khazad.toml') if not args.config else args.config} top`, "
                f"or stop it with `supervisorctl -c {_rel(run_dir.resolve() / 'supervisord.conf')} shutdown`."
            )
            return EXIT_STARTUP_FAILED
        plan = make_plan(args)
        settings = preflight(plan)
    except (ConfigError, ConfigErrorExit) as exc:
        say(f"configuration error: {exc}")
        return EXIT_CONFIG
    plan.conf_path.write_text(render(plan))
    if args.render_only:
        say(f"wrote {plan.conf_path} and {plan.config_path}")
        print(f"supervisord -n -c {plan.conf_path}")
        return 0
    if plan.mode == "live":
        say("*** LIVE TRADING: orders go to a real-money account ***")
    say(f"starting {', '.join(plan.programs)} under supervisord ({plan.mode} mode; {settings})")
    runner = Runner(plan, started)
    signal.signal(signal.SIGINT, runner.request_stop)
    signal.signal(signal.SIGTERM, runner.request_stop)
    code = 0
    try:
        runner.launch()
        health = runner.wait_healthy(args.timeout)
        if runner.stop_requested.is_set():
            code = 0
        elif health.fatal:
            say(f"could not start: {', '.join(health.fatal)} FATAL (see the log lines above); stopping")
            code = EXIT_STARTUP_FAILED
        elif not health.ok:
            say(f"not healthy after {args.timeout:g}s; still missing: {', '.join(health.missing)}")
            if plan.mode != "sim":
                say(
                    f"is TWS / IB Gateway running on {plan.cfg.gateway.host} with the API enabled? "
                    f"see {plan.log_dir}/gateway.log"
                )
            if args.exit_on_timeout:
                code = EXIT_STARTUP_FAILED
            else:
                say("keeping it running under supervision (Ctrl-C stops everything)")
                code = runner.supervise()
        else:
            runner.print_summary(time.monotonic() - started, settings)
            code = runner.supervise()
    except RuntimeError as exc:
        say(str(exc))
        code = EXIT_STARTUP_FAILED
    finally:
        clean = runner.shutdown()
        say("stopped cleanly" if clean else "stopped (some processes had to be killed)")
    return code


def simulator_summary(cfg: KhazadConfig) -> str:
    """What the embedded simulator runs: its latency profile, market hours and data source (the banner says so,
    because timing and sessions change what a strategy sees)."""
    s = cfg.sim
    data = f"replay {s.replay} at {s.replay_speed:g}x" if s.replay else f"random walk (seed {s.seed})"
    return f"latency {s.latency}, market hours {s.market_hours}, {data}"
