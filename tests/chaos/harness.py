"""The chaos harness: a shared supervised system, the scripted load, the faults, the health and end-to-end probes,
and the scenario runner that injects one fault under load and times how long the system takes to recover.

A scenario (:func:`run_scenario`):

1. the system is healthy and ACTIVE (the :class:`SystemPool` re-checks it; a trading state left behind is
   resumed and reported as a failure, a system that cannot be made healthy is restarted);
2. the load starts (two strategy processes, ``tests/chaos/load.py``) and runs until each strategy has had a few
   orders acknowledged;
3. halt variant: ``khazad kill`` (``cli.kill.send_kill``), confirmed by the gateway, before the fault;
4. the fault (one of :data:`SCENARIOS`); ``t_clear`` is when it is over (the SIGKILL itself, the SIGCONT, the end
   of the simulator's refusal or of the connectivity loss, the last dropped acknowledgement);
5. **ready**: every program RUNNING (a killed one with a new pid), every actor alive at the monitor with the pid
   supervisord reports, the gateway READY, the risk governor ready, the order manager and the portfolio
   reconciled, and a probe order placed end to end (live at IB, then cancelled) - or, HALTED, refused;
6. the load is stopped (it cancels its working orders); **converged**: every invariant of
   ``tests/chaos/invariants.py`` holds on one consistent look at the system;
7. halt variant: the halt is still in force everywhere; then ``khazad resume`` and a probe order goes through;
8. no supervised program other than the fault's victim was restarted meanwhile.

Both times are measured from ``t_clear``, with a hard limit well above the stated bound so the report shows the
real figure when the bound is missed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bus import registry
from bus.messages import GatewayStatus, GetRiskState, GetStatus, GetSystemStatus, RiskStateReply
from bus.retry import RequestTimeout
from cli.exit_codes import EXIT_OK
from cli.kill import send_kill
from cli.resume import send_resume
from sdk import KhazadClient, KhazadClientError, OrderRejected, OrderWaitTimeout
from sim.control import ControlError
from tests.chaos import invariants
from tests.support.processes import ActorProcess
from tests.support.sim_state import SIM_WORKING
from tests.support.system import System, running_system
from tests.support.waiting import eventually

#: The load: (strategy id, symbols) per process.
LOAD_STRATEGIES = (("chaos_a", "AAPL,MSFT"), ("chaos_b", "SPY,NVDA"))
PROBE_STRATEGY = "chaos_probe"
PROBE_SYMBOL = "AAPL"
#: Where the probe rests: this far under the bid (inside the risk governor's 5 % collar, far from a fill).
PROBE_DISCOUNT = 0.01
#: The resting probe's quantity, outside probe_order's 1..50 so the two never look like duplicates.
RESTING_PROBE_QTY = 75.0
#: Rejection codes that mean "trading is halted".
HALT_CODES = frozenset({"halted", "risk.halted"})
#: Orders each load strategy gets acknowledged before the fault (the load is warm: orders resting and filling).
LOAD_WARM_ACKS = 4
LOAD_WARM_TIMEOUT_S = 60.0
#: The load's graceful stop: the request in hand (up to 3 attempts under a fault) plus cancelling everything.
LOAD_STOP_TIMEOUT_S = 45.0
HALT_INVARIANT = "a halt set before the fault is still in force"
#: The stated bound for ready and converged (seconds after the fault is over), unless a scenario says otherwise.
BOUND_S = 30.0
#: How long the harness keeps measuring past the bound (so a miss is reported with its real figure).
MEASURE_LIMIT_S = 90.0
#: Spacing of probe orders while waiting for readiness (a bounded poll of the live system; each probe places an
#: order, so not faster than this).
PROBE_SPACING_S = 0.5
PROBE_TIMEOUT_S = 5.0
#: Bound for health requests to the services while measuring (a dead one must not stall the measurement).
HEALTH_CALL_TIMEOUT_S = 1.0
#: Fault parameters.
RISK_STOP_S = 10.0
SIM_GAP_S = 4.0
CONNECTIVITY_LOST_S = 4.0
DROPPED_ACKS = 6
FAULT_TIMEOUT_S = 30.0
#: A pre-scenario check gives the system this long to become healthy and ACTIVE before the pool restarts it.
PRECHECK_TIMEOUT_S = 45.0


def say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# the shared system
# ---------------------------------------------------------------------------------------------------------------


def chaos_config(text: str) -> str:
    """The chaos system's configuration: the test config with the production defaults for heartbeats and INFO
    logs (the suite measures recovery as a deployment would see it)."""
    return text.replace('level = "DEBUG"', 'level = "INFO"').replace("heartbeat_interval_s = 0.2\n", "")


class SystemPool:
    """One supervised system shared by the scenarios of a module; :meth:`healthy` hands it out healthy and ACTIVE,
    restarting it when a previous scenario left it broken."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.stack: ExitStack | None = None
        self.system: System | None = None
        self.starts = 0
        self.teardown_errors: list[str] = []
        self.found_before: list[str] = []
        self.previous_failed = False

    def _start(self) -> System:
        self.starts += 1
        tmp = self.base / f"system{self.starts}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.stack = ExitStack()
        self.system = self.stack.enter_context(running_system(
            tmp, extra="[strategy]\nenabled = false\n", edit_config=chaos_config))
        say(f"system {self.starts} up in {time.monotonic() - self.system.started_s:.1f}s ({tmp})")
        return self.system

    def _stop(self) -> None:
        if self.stack is not None:
            try:
                self.stack.close()
            except AssertionError as exc:  # reported by the fixture at the end; the next system must start
                self.teardown_errors.append(str(exc))
        self.stack = None
        self.system = None

    def close(self) -> None:
        self._stop()

    def healthy(self) -> System:
        """The system, healthy, ACTIVE and trading. What had to be repaired first (a trading state nobody should
        have left behind) is in :attr:`found_before` for the scenario to report, unless the previous scenario
        already failed (its failure explains it)."""
        self.found_before = []
        if self.system is None:
            return self._start()
        try:
            found = prepare(self.system)
            if not self.previous_failed:
                self.found_before = found
            return self.system
        except AssertionError as exc:
            say(f"system {self.starts} is not healthy before the scenario ({exc}); restarting it")
            self._stop()
            return self._start()


def prepare(system: System) -> list[str]:
    """Before a scenario: no simulator fault pending, trading ACTIVE, every actor healthy and a probe order
    through. Every scenario ends ACTIVE, so a trading state that is not ACTIVE here arose after the previous
    scenario had converged: it is resumed (``khazad resume``) so the suite goes on, and returned as a finding.
    Raises AssertionError when the system cannot be had healthy in time."""
    found: list[str] = []
    faults = system.sim()["faults"]
    if faults["refusing_connections"]:
        system.sim_call("accept_connections")
    system.sim_call("clear_faults")
    gw = _quiet_call(system, "gateway", GetStatus())
    if isinstance(gw, GatewayStatus) and gw.trading_state != "ACTIVE":
        found.append(f"gateway {gw.trading_state} ({gw.halted_scopes}) before the scenario")
    risk = _quiet_call(system, "risk", GetRiskState())
    if isinstance(risk, RiskStateReply) and risk.global_state != "ACTIVE":
        found.append(f"risk governor {risk.global_state} before the scenario ({risk.scope_states}, disconnect "
                     f"breaker {risk.breakers.get('disconnect')})")
    if found:
        say(f"{'; '.join(found)}: `khazad resume`")
        send_resume(system.cfg, reason="chaos: back to ACTIVE before the next scenario")
    attempt = iter(range(1_000_000))
    eventually(lambda: not health_problems(system, "ACTIVE") and probe_order(system, next(attempt)) is None,
               PRECHECK_TIMEOUT_S, interval=PROBE_SPACING_S,
               message=lambda: f"healthy and trading before the scenario: {health_problems(system, 'ACTIVE')}")
    return found


# ---------------------------------------------------------------------------------------------------------------
# health and the end-to-end probe
# ---------------------------------------------------------------------------------------------------------------


def _quiet_call(system: System, service: str, body: Any, timeout_s: float = HEALTH_CALL_TIMEOUT_S) -> Any:
    """A request that returns the exception instead of raising it (a dead service is an answer here)."""
    try:
        return system.call(service, body, timeout_s=timeout_s, retries=0)
    except RequestTimeout as exc:
        return exc


def health_problems(system: System, trading: str, replaced: dict[str, int] | None = None) -> list[str]:
    """What keeps the system from being healthy (empty: healthy), looked at from supervisord, the monitor and the
    services themselves. ``replaced``: programs that must run with another pid than the one given."""
    try:
        infos = system.infos()
    except (OSError, xmlrpc.client.Error) as exc:
        return [f"supervisord: {exc}"]
    problems = [f"{n} {i['statename']}" for n, i in infos.items() if i["statename"] != "RUNNING"]
    problems += [f"{n} not restarted yet (pid {pid})" for n, pid in (replaced or {}).items()
                 if infos[n]["pid"] == pid]
    status = _quiet_call(system, "monitor", GetSystemStatus())
    if isinstance(status, Exception):
        return problems + [f"monitor: {status}"]
    actors = {a.name: a for a in status.actors}
    for name in system.cfg.monitor.expected_actors:
        a = actors.get(name)
        if a is None or not a.alive:
            problems.append(f"{name} not alive at the monitor")
        elif name in infos and a.pid != infos[name]["pid"]:
            problems.append(f"monitor sees {name} pid {a.pid}, supervisord {infos[name]['pid']}")
    if status.connection != "READY":
        problems.append(f"monitor: connection {status.connection}")
    if "orders" in actors and actors["orders"].detail.get("ready") != "true":
        problems.append("orders not reconciled")
    if "portfolio" in actors and actors["portfolio"].detail.get("reconciled") != "yes":
        problems.append("portfolio not reconciled")
    gw = _quiet_call(system, "gateway", GetStatus())
    if not isinstance(gw, GatewayStatus):
        problems.append(f"gateway: {gw}")
    elif gw.connection != "READY" or gw.trading_state != trading:
        problems.append(f"gateway {gw.connection} {gw.trading_state}")
    risk = _quiet_call(system, "risk", GetRiskState())
    if not isinstance(risk, RiskStateReply):
        problems.append(f"risk: {risk}")
    elif not risk.ready or risk.global_state != trading:
        problems.append(f"risk ready={risk.ready} {risk.global_state} {risk.scope_states} (disconnect breaker: "
                        f"{risk.breakers.get('disconnect')})")
    return problems


def probe_order(system: System, n: int, *, halted: bool = False) -> str | None:
    """One order end to end from a fresh strategy client. ACTIVE: placed, live at IB, cancelled (None = it went
    through, else why not). HALTED: it must be refused with a halt code (None), anything else is the reason it
    was not; an order that reaches IB while HALTED fails the test at once."""
    quote = system.sim()["quotes"][PROBE_SYMBOL]
    price = round(quote["bid"] * (1 - PROBE_DISCOUNT), 2)
    qty = float(1 + n % 50)  # distinct terms: the governor's duplicate check looks at the last second's orders
    try:
        with KhazadClient(PROBE_STRATEGY, config=system.cfg, timeout_s=1.5, retries=1) as c:
            try:
                view = c.place_limit_order(PROBE_SYMBOL, "BUY", qty, price)
            except OrderRejected as exc:
                if halted and exc.code in HALT_CODES:
                    return None
                return f"probe refused {exc.code}: {exc.reason}"
            ref = view.spec.order_ref
            if halted:
                c.cancel_order(view.spec.client_order_id, reason="chaos: probe accepted while HALTED")
                raise AssertionError(f"probe {ref} was accepted while HALTED ({view.status})")
            coid = view.spec.client_order_id
            live = c.wait_for_order(coid, "live", timeout=PROBE_TIMEOUT_S)
            at_ib = [o for o in system.sim()["orders"].values() if o["orderRef"] == ref]
            if not live.is_live or len(at_ib) != 1 or at_ib[0]["status"] not in SIM_WORKING:
                c.cancel_order(coid, reason="chaos probe")
                return f"probe {ref} {live.status}, at IB {[o['status'] for o in at_ib]}"
            c.cancel_order(coid, reason="chaos probe")
            done = c.wait_for_order(coid, "done", timeout=PROBE_TIMEOUT_S)
            if done.status != "Cancelled":
                return f"probe {ref} not cancelled: {done.status}"
            return None
    except (RequestTimeout, TimeoutError, OrderWaitTimeout, KhazadClientError, ControlError) as exc:
        return f"probe: {type(exc).__name__}: {exc}"


def cancel_probe_orders(system: System) -> None:
    """Probes interrupted by a fault may have left an order resting: cancel whatever the probe strategy has."""
    try:
        with KhazadClient(PROBE_STRATEGY, config=system.cfg, timeout_s=2.0, retries=1) as c:
            c.cancel_all_orders(reason="chaos: probe cleanup")
    except (RequestTimeout, TimeoutError, KhazadClientError) as exc:
        say(f"probe cleanup failed: {exc}")


# ---------------------------------------------------------------------------------------------------------------
# the load
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Load:
    """The load processes of one scenario and the files they write."""

    procs: list[ActorProcess]
    outs: list[Path]

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.outs:
            try:
                lines = path.read_text().splitlines()
            except FileNotFoundError:
                continue
            out += [json.loads(line) for line in lines if line.endswith("}")]
        return out

    def acks(self) -> dict[str, int]:
        counts = {sid: 0 for sid, _ in LOAD_STRATEGIES}
        for r in self.records():
            if r["op"] == "place" and r["result"] == "ack":
                counts[r["ref"].split("/", 1)[0]] += 1
        return counts

    def stop(self) -> list[str]:
        """SIGTERM every load process and wait for its clean exit; returns problems (empty: all stopped)."""
        problems = []
        for p in self.procs:
            if p.alive():
                p.signal(signal.SIGTERM)
        for p in self.procs:
            try:
                code = p.wait(LOAD_STOP_TIMEOUT_S)
            except Exception:  # subprocess.TimeoutExpired: killed below, reported
                p.kill()
                problems.append(f"{p.name} did not stop within {LOAD_STOP_TIMEOUT_S:g}s:\n{p.log()[-2000:]}")
                continue
            if code != 0:
                problems.append(f"{p.name} exited {code}:\n{p.log()[-2000:]}")
        return problems

    def kill(self) -> None:
        for p in self.procs:
            p.kill()


def start_load(system: System, tag: str, seed: int) -> Load:
    procs, outs = [], []
    for i, (sid, symbols) in enumerate(LOAD_STRATEGIES):
        out = system.config_path.parent / f"load-{tag}-{sid}.jsonl"
        p = ActorProcess("tests.chaos.load", system.config_path, name=f"load-{tag}-{sid}",
                         args=["--strategy", sid, "--symbols", symbols, "--out", str(out), "--seed",
                               str(seed * 10 + i)]).start()
        procs.append(p)
        outs.append(out)
    return Load(procs, outs)


# ---------------------------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FaultRun:
    """What a fault did: when it was over, which programs it replaced, checks made while it lasted."""

    system: System
    t_inject: float = 0.0
    t_clear: float = 0.0
    replaced: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kill_during: bool = False
    #: trading was halted before the fault (nothing can rest; orders are refused for the halt)
    halted_before: bool = False
    perm_at_kill: int | None = None


def sigkill(program: str) -> Callable[[FaultRun], None]:
    def inject(run: FaultRun) -> None:
        pid = run.system.infos()[program]["pid"]
        run.t_inject = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        run.t_clear = run.t_inject
        run.replaced[program] = pid
        run.notes.append(f"SIGKILL {program} pid {pid}")
    return inject


def risk_sigstop(run: FaultRun) -> None:
    """SIGSTOP the risk governor for RISK_STOP_S: new orders are refused (fail closed), a cancel still goes
    through, and (``kill_during``) a kill is confirmed by the gateway; then SIGCONT."""
    system = run.system
    # placed while the governor still answers, cancelled while it is stopped (nothing rests while HALTED)
    resting = None if run.halted_before else _rest_probe(system, run.notes)
    pid = system.infos()["risk"]["pid"]
    run.t_inject = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        run.notes.append(f"SIGSTOP risk pid {pid} for {RISK_STOP_S:g}s")
        # fail closed: an order placed now is refused by the order manager (no answer from the governor)
        with KhazadClient(PROBE_STRATEGY, config=system.cfg, timeout_s=2.0, retries=1) as c:
            price = round(system.sim()["quotes"][PROBE_SYMBOL]["bid"] * (1 - PROBE_DISCOUNT), 2)
            try:
                view = c.place_limit_order(PROBE_SYMBOL, "BUY", 3, price)
                run.failures.append(f"order accepted while the risk governor was stopped: {view.spec.order_ref} "
                                    f"{view.status}")
            except OrderRejected as exc:
                if exc.code != "risk.unavailable" and not (run.halted_before and exc.code in HALT_CODES):
                    run.failures.append(f"order refused with {exc.code} (expected risk.unavailable): {exc.reason}")
                if exc.order is not None and any(o["orderRef"] == exc.order.spec.order_ref
                                                 for o in system.sim()["orders"].values()):
                    run.failures.append(f"refused order {exc.order.spec.order_ref} reached IB")
            # a cancel never needs the governor
            if resting is not None:
                c.cancel_order(resting, reason="chaos: cancel while risk is stopped")
                done = c.wait_for_order(resting, "done", timeout=PROBE_TIMEOUT_S)
                ref = done.spec.order_ref
                at_ib = [o["status"] for o in system.sim()["orders"].values() if o["orderRef"] == ref]
                if done.status != "Cancelled" or at_ib != ["Cancelled"]:
                    run.failures.append(f"cancel while risk stopped: {ref} {done.status}, at IB {at_ib}")
                else:
                    run.notes.append("cancel went through while risk was stopped")
            elif not run.halted_before:
                run.failures.append("could not rest a probe order before the stop")
        if run.kill_during:
            outcome = send_kill(system.cfg, reason="chaos: kill while the risk governor is stopped")
            run.perm_at_kill = _max_perm(system)
            if outcome.exit_code != EXIT_OK:
                run.failures.append(f"kill while risk stopped not confirmed: {outcome.gateway.detail}")
            else:
                run.notes.append(f"kill confirmed by the gateway while risk was stopped (risk leg: "
                                 f"{outcome.risk.status})")
        remaining = RISK_STOP_S - (time.monotonic() - run.t_inject)
        if remaining > 0:
            threading.Event().wait(remaining)  # the fault's duration: the governor stays stopped this long
    finally:
        os.kill(pid, signal.SIGCONT)
        run.t_clear = time.monotonic()


def _rest_probe(system: System, notes: list[str]) -> str | None:
    """A working probe order (its client order id), or None with the reason added to ``notes``."""
    try:
        with KhazadClient(PROBE_STRATEGY, config=system.cfg, timeout_s=2.0, retries=1) as c:
            price = round(system.sim()["quotes"][PROBE_SYMBOL]["bid"] * (1 - PROBE_DISCOUNT), 2)
            # A quantity no probe_order uses (1..50): a readiness probe a moment earlier at the same price would
            # otherwise make this order the governor's duplicate (risk.duplicate within its window).
            view = c.place_limit_order(PROBE_SYMBOL, "BUY", RESTING_PROBE_QTY, price)
            c.wait_for_order(view.spec.client_order_id, "live", timeout=PROBE_TIMEOUT_S)
            return view.spec.client_order_id
    except (OrderRejected, RequestTimeout, OrderWaitTimeout, KhazadClientError, TimeoutError) as exc:
        notes.append(f"probe order not rested: {type(exc).__name__}: {exc}")
        return None


def _max_perm(system: System) -> int:
    return max((o["permId"] for o in system.sim()["orders"].values()), default=0)


def sim_daily_restart(run: FaultRun) -> None:
    """IB Gateway's daily restart: every connection dropped, connections refused for SIM_GAP_S; resting orders
    fill meanwhile (the gateway must learn those fills after it reconnects)."""
    system = run.system
    run.t_inject = time.monotonic()
    system.sim_call("daily_restart", seconds=SIM_GAP_S)
    resting = [o for o in system.sim()["orders"].values() if o["status"] in ("Submitted", "PreSubmitted")
               and o["remaining"] > 0]
    filled = []
    for o in resting[:3]:
        qty = min(o["remaining"], max(1.0, o["remaining"] // 2))
        try:
            system.sim_call("fill", perm_id=o["permId"], quantity=qty)
            filled.append(f"{o['orderRef']} {qty:g}")
        except ControlError as exc:
            run.notes.append(f"could not fill {o['orderRef']} during the gap: {exc}")
    run.notes.append(f"connections dropped, refused for {SIM_GAP_S:g}s; filled during the gap: "
                     f"{filled or ('none (HALTED: nothing rests)' if run.halted_before else 'none')}")
    if not filled and not run.halted_before:
        run.failures.append("no resting order to fill during the gap (the load rested none)")

    def listening() -> bool:
        return not system.sim()["faults"]["refusing_connections"]
    eventually(listening, FAULT_TIMEOUT_S, interval=0.05, message="simulator accepting connections again")
    run.t_clear = time.monotonic()


def connectivity_1100_1101(run: FaultRun) -> None:
    """TWS loses IB's servers (1100) and gets them back with data lost (1101) after CONNECTIVITY_LOST_S."""
    system = run.system
    run.t_inject = time.monotonic()
    system.sim_call("connectivity", lost_for=CONNECTIVITY_LOST_S, restore=1101)
    eventually(lambda: system.sim()["faults"]["connectivity_lost"], FAULT_TIMEOUT_S, interval=0.05,
               message="simulator reports connectivity lost")
    eventually(lambda: not system.sim()["faults"]["connectivity_lost"], FAULT_TIMEOUT_S, interval=0.05,
               message="simulator reports connectivity restored")
    run.t_clear = time.monotonic()
    run.notes.append(f"1100 for {CONNECTIVITY_LOST_S:g}s, then 1101")


def dropped_acks(run: FaultRun) -> None:
    """The next DROPPED_ACKS orders get no PreSubmitted/Submitted from IB (they still work and fill)."""
    system = run.system
    run.t_inject = time.monotonic()
    system.sim_call("drop_acks", n=DROPPED_ACKS)
    eventually(lambda: system.sim()["faults"]["drop_acks"] == 0, FAULT_TIMEOUT_S, interval=0.05,
               message=f"the load placed {DROPPED_ACKS} orders whose acknowledgements were dropped")
    run.t_clear = time.monotonic()
    run.notes.append(f"acknowledgements of {DROPPED_ACKS} orders dropped")


@dataclass(frozen=True)
class Scenario:
    """One fault, injected under load."""

    name: str
    title: str
    inject: Callable[[FaultRun], None]
    bound_s: float = BOUND_S
    kill_during: bool = False
    #: halt variant: the kill follows the fault instead of preceding it (a fault that needs orders reaching IB,
    #: which a halt would stop; the kill must then cancel what the fault left behind)
    halt_after_fault: bool = False


SCENARIOS = (
    # first, on a fresh system: the governor's disconnect breaker must be armed and untripped for this fault to
    # mean anything (a tripped-and-never-cleared breaker from an earlier fault would hide it: docs/chaos.md)
    Scenario("risk_sigstop", f"SIGSTOP risk governor {RISK_STOP_S:g} s", risk_sigstop),
    Scenario("gateway_sigkill", "SIGKILL gateway", sigkill("gateway")),
    Scenario("orders_sigkill", "SIGKILL order manager", sigkill("orders")),
    Scenario("risk_sigkill", "SIGKILL risk governor", sigkill("risk")),
    Scenario("portfolio_sigkill", "SIGKILL portfolio", sigkill("portfolio")),
    Scenario("monitor_sigkill", "SIGKILL monitor", sigkill("monitor")),
    # events published while the proxy is down are lost; the portfolio does not reconcile on a bus gap, only every
    # portfolio.reconcile_interval_s (30 s): its books can lag that long (docs/chaos.md, findings)
    Scenario("proxy_sigkill", "SIGKILL bus proxy", sigkill("proxy"), bound_s=45.0),
    Scenario("sim_daily_restart", f"IB daily restart (drop, refuse {SIM_GAP_S:g} s, fills in the gap)",
             sim_daily_restart),
    Scenario("connectivity_1100_1101", f"1100 for {CONNECTIVITY_LOST_S:g} s, then 1101", connectivity_1100_1101),
    Scenario("dropped_acks", f"{DROPPED_ACKS} orders' acknowledgements dropped", dropped_acks,
             halt_after_fault=True),
)
#: Not a halt-before-the-fault variant: the kill is sent while the governor is stopped.
KILL_DURING_RISK_SIGSTOP = Scenario("risk_sigstop_kill_during", f"SIGSTOP risk governor {RISK_STOP_S:g} s, "
                                    "kill sent meanwhile", risk_sigstop, kill_during=True)


# ---------------------------------------------------------------------------------------------------------------
# the scenario runner
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario run measured and found (one row of docs/chaos.md)."""

    scenario: str
    title: str
    halt: str
    bound_s: float
    ready_s: float | None = None
    converged_s: float | None = None
    violations: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    #: warnings and errors the actors logged during a failed scenario (program -> lines)
    log_lines: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (not self.violations and not self.failures and self.ready_s is not None
                and self.converged_s is not None and self.ready_s <= self.bound_s
                and self.converged_s <= self.bound_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def explain(self) -> str:
        lines = [f"{self.scenario} ({self.halt}): ready {self.ready_s}s, converged {self.converged_s}s "
                 f"(bound {self.bound_s:g}s)"]
        lines += [f"  failure: {f}" for f in self.failures]
        for name, found in self.violations.items():
            lines.append(f"  VIOLATED {name}:")
            lines += [f"    {v}" for v in found[:20]] + ([f"    ... {len(found) - 20} more"] if len(found) > 20 else [])
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  load: {self.load}")
        for program, found in self.log_lines.items():
            lines.append(f"  {program}.log:")
            lines += [f"    {line[:300]}" for line in found]
        return "\n".join(lines)


def _measure(until: Callable[[], bool], start: float, limit_s: float = MEASURE_LIMIT_S) -> float | None:
    """Seconds from ``start`` until ``until()`` holds (polled; each look is a real request), None past the limit."""
    deadline = start + limit_s
    wait = threading.Event()
    while True:
        if until():
            return round(time.monotonic() - start, 2)
        if time.monotonic() > deadline:
            return None
        wait.wait(PROBE_SPACING_S)


def _load_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    placed = [r for r in records if r["op"] == "place"]
    summary = {"acked": sum(r["result"] == "ack" for r in placed),
               "rejected": sum(r["result"] == "rejected" for r in placed),
               "timeouts": sum(r["result"] == "timeout" for r in placed),
               "modified": sum(r["op"] == "modify" and r["result"] == "ack" for r in records),
               "cancelled": sum(r["op"] == "cancel" and r["result"] == "ack" for r in records),
               "errors": sum(r["op"] == "error" for r in records)}
    codes: dict[str, int] = {}
    for r in placed:
        if r["result"] == "rejected":
            codes[r.get("code", "?")] = codes.get(r.get("code", "?"), 0) + 1
    summary["reject_codes"] = codes
    return summary


#: Programs whose warnings and errors a failed scenario reports, and how many lines of each.
LOG_PROGRAMS = registry.ACTOR_NAMES
LOG_LINES_MAX = 15
LOG_LEVELS = (" WARNING ", " ERROR ", " CRITICAL ")


def _log_offsets(system: System) -> dict[str, int]:
    out = {}
    for program in LOG_PROGRAMS:
        try:
            out[program] = (system.cfg.run_path / "logs" / f"{program}.log").stat().st_size
        except FileNotFoundError:
            out[program] = 0
    return out


def _log_lines_since(system: System, offsets: dict[str, int]) -> dict[str, list[str]]:
    """The warnings and errors each actor logged since ``offsets`` (first and last lines when there are many)."""
    found: dict[str, list[str]] = {}
    for program, offset in offsets.items():
        try:
            with open(system.cfg.run_path / "logs" / f"{program}.log", "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except FileNotFoundError:
            continue
        lines = [ln for ln in text.splitlines() if any(level in ln for level in LOG_LEVELS)]
        # an actor's own errors first (the monitor also logs every alert at its severity: those come after)
        errors = [ln for ln in lines if (" ERROR " in ln or " CRITICAL " in ln) and "ALERT [" not in ln]
        rest = [ln for ln in lines if ln not in errors]
        room = max(4, LOG_LINES_MAX - len(errors))
        if len(rest) > room:
            half = room // 2
            rest = rest[:half] + [f"... {len(rest) - 2 * half} more ..."] + rest[-half:]
        lines = errors[:LOG_LINES_MAX] + rest
        if lines:
            found[program] = lines
    return found


def _halt(system: System, run: FaultRun, out: Outcome, scenario: Scenario) -> None:
    outcome = send_kill(system.cfg, reason=f"chaos: halt around {scenario.name}")
    run.perm_at_kill = _max_perm(system)
    if outcome.exit_code != EXIT_OK:
        out.failures.append(f"kill not confirmed: {outcome.gateway.detail}")
    else:
        run.notes.append(f"kill confirmed: {outcome.gateway.detail}")


def run_scenario(system: System, scenario: Scenario, *, halt: str, seed: int,
                 found_before: list[str] | None = None) -> Outcome:
    """Run one scenario (``halt``: ``none``, ``before`` the fault, or ``during`` it) and measure it.
    ``found_before``: what the pool had to repair before it (reported as failures: the system should not have
    been in that state)."""
    out = Outcome(scenario=scenario.name, title=scenario.title, halt=halt, bound_s=scenario.bound_s)
    out.failures += [f"found before the scenario (after the previous one had converged): {f}"
                     for f in found_before or []]
    run = FaultRun(system=system, kill_during=halt == "during", halted_before=halt == "before")
    tag = f"{scenario.name}-{halt}"
    offsets = _log_offsets(system)
    pids_before = {name: info["pid"] for name, info in system.infos().items()}
    load = start_load(system, tag, seed)
    halted = halt != "none"
    try:
        eventually(lambda: min(load.acks().values()) >= LOAD_WARM_ACKS, LOAD_WARM_TIMEOUT_S, interval=0.1,
                   message=lambda: f"load warm ({load.acks()}); logs:\n" + "\n".join(p.log()[-1500:]
                                                                                   for p in load.procs))
        if halt == "before" and not scenario.halt_after_fault:
            _halt(system, run, out, scenario)
        say(f"{tag}: injecting ({load.acks()} acked so far)")
        scenario.inject(run)
        if halt == "before" and scenario.halt_after_fault:
            _halt(system, run, out, scenario)
            run.t_clear = time.monotonic()
        probes = iter(range(1_000_000))
        trading = "HALTED" if halted else "ACTIVE"
        last_problems: list[str] = []

        def ready() -> bool:
            nonlocal last_problems
            last_problems = health_problems(system, trading, run.replaced)
            if last_problems:
                return False
            why = probe_order(system, next(probes), halted=halted)
            last_problems = [why] if why else []
            return why is None
        out.ready_s = _measure(ready, run.t_clear)
        if out.ready_s is None:
            out.failures.append(f"not ready within {MEASURE_LIMIT_S:g}s: {last_problems}")
    finally:
        problems = load.stop()
        out.failures += problems
    records = load.records()
    out.load = _load_summary(records)
    errors = [r["error"] for r in records if r["op"] == "error"]
    if errors:
        out.failures.append(f"the load hit {len(errors)} unexpected error(s), first: {errors[0]}")
    cancel_probe_orders(system)
    last: dict[str, list[str]] = {}
    transient: dict[str, list[str]] = {}

    def converged() -> bool:
        nonlocal last
        truth = invariants.gather(system, records)
        if truth is None:
            return False
        last_truth[:] = [truth]
        last = invariants.violations(truth)
        if halted:
            if run.perm_at_kill is None:
                last[HALT_INVARIANT] = ["the kill was never confirmed"]
            elif found := invariants.check_halt_in_force(system, run.perm_at_kill):
                last[HALT_INVARIANT] = found
        for name, found in last.items():
            transient.setdefault(name, found[:2])
        return not last
    last_truth: list[invariants.Truth] = []
    out.converged_s = _measure(converged, run.t_clear)
    if out.converged_s is None:
        out.violations = last or {"(no consistent look at the system)": ["the simulator never stood still"]}
    elif transient:
        out.notes.append("until converged: " + "; ".join(f"{name}: {found}" for name, found in transient.items()))
    if last_truth and (late := invariants.amendments_after_cancel(last_truth[0])):
        out.notes.append(f"modification reached IB after the order's cancel (refused there): {late}")
    # only the fault's victim may have been restarted: any other restart is a crash the fault provoked
    for name, info in system.infos().items():
        if name not in run.replaced and info["pid"] != pids_before.get(name):
            out.failures.append(f"{name} restarted although it was not the fault's victim (pid "
                                f"{pids_before.get(name)} -> {info['pid']}); see {name}.log")
    if halted:
        send_resume(system.cfg, reason=f"chaos: resume after {scenario.name}")
        attempt = iter(range(1_000_000))
        resumed = _measure(lambda: not health_problems(system, "ACTIVE")
                           and probe_order(system, next(attempt)) is None, time.monotonic())
        if resumed is None:
            out.failures.append(f"trading did not resume after `khazad resume`: {health_problems(system, 'ACTIVE')}")
        else:
            out.notes.append(f"resumed: a probe order went through {resumed:g}s after `khazad resume`")
    out.failures += run.failures
    out.notes += run.notes
    if not out.passed:
        out.log_lines = _log_lines_since(system, offsets)
    say(out.explain())
    return out
