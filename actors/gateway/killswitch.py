"""Kill, emergency cancel, cancel-scope and resume: the halt latch, its persistence and the verified cancel sweeps.

Semantics in docs/gateway.md: a kill latches HALTED and persists it *before* acting, drops unsent order messages of
its scope, cancels (globally for scope ``all``, one by one otherwise), verifies against IB's open-order list until
nothing works, and answers with a :class:`~bus.messages.CancelReport`.

One kill id gives one sweep. A kill latches once per ``kill_id`` (the direct request and the bus copies share one
report); an emergency cancel answers once per ``command_id``; and every sweep goes through the
:class:`~actors.gateway.cancels.SweepRegistry`, keyed by the command's id, so the risk governor's emergency cancel
sent in reaction to a kill (it carries the kill's id) joins the kill's sweep instead of running a second one, in
whichever order the two arrive.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

from loguru import logger

from actors.gateway.cancels import (
    Keep,
    SweepRegistry,
    SweepResult,
    UnsentOrders,
    breaker_cause,
    kill_cause,
    scope_cause,
)
from actors.gateway.halts import GLOBAL_SCOPE, HaltLatch
from actors.gateway.ordertable import IbOrderTable
from actors.gateway.outbox import Outbox
from actors.gateway.persist import PendingSweep, StateStore
from bus.messages import CancelReport, CancelScope, EmergencyCancel, Kill, Resume, TradingState

#: How many kill/emergency command ids are remembered for de-duplication (direct request vs bus copy).
COMMAND_MEMORY = 10_000
#: A report lists at most this many order refs still working.
REPORT_REFS = 500

R = TypeVar("R")


class CommandMemory(Generic[R]):
    """Runs a command once per id: later copies (the direct request and the bus copy) await the first one's
    result. A command that fails is forgotten, so a retry runs it again."""

    def __init__(self, size: int = COMMAND_MEMORY) -> None:
        self.size = size
        self._results: OrderedDict[str, asyncio.Future[R]] = OrderedDict()

    async def once(self, command_id: str, run: Callable[[], Awaitable[R]]) -> R:
        fut = self._results.get(command_id)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._results[command_id] = fut
        while len(self._results) > self.size:
            self._results.popitem(last=False)
        try:
            result = await run()
        except BaseException as exc:
            fut.set_exception(exc)
            self._results.pop(command_id, None)
            raise
        fut.set_result(result)
        return result


class HaltKeeper:
    """The halt latch and its durable copy: every change is written (atomically, fsynced) before it is acted on;
    a failed write is a critical alert and the latch holds in memory."""

    def __init__(self, latch: HaltLatch, store: StateStore, outbox: Outbox) -> None:
        self.latch = latch
        self.store = store
        self.outbox = outbox

    def persist(self) -> bool:
        try:
            self.store.save(self.latch.to_state())
            return True
        except OSError as exc:
            logger.critical("gateway: could not persist the halt latch to {}: {}", self.store.path, exc)
            self.outbox.alert(
                "critical", f"could not persist the gateway state ({exc}); the latch holds in memory only"
            )
            return False

    def quarantine_state_file(self) -> None:
        path: Path = self.store.path
        if path.exists():
            target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(path, target)
                logger.error("gateway: moved the unreadable state file to {}", target)
            except OSError as exc:
                logger.error("gateway: could not move the unreadable state file: {}", exc)


class KillSwitch:
    """Kill / EmergencyCancel / CancelScope / Resume, and the sweeps a restart left unconfirmed."""

    def __init__(
        self,
        halts: HaltKeeper,
        sweeps: SweepRegistry,
        unsent: UnsentOrders,
        table: IbOrderTable,
        outbox: Outbox,
        *,
        is_connected: Callable[[], bool],
        protective: Keep | None = None,
    ) -> None:
        #: what a kill --keep-protective spares (None: nothing, every kill cancels everything)
        self.protective = protective
        self.halts = halts
        self.latch = halts.latch
        self.sweeps = sweeps
        self.unsent = unsent
        self.table = table
        self.outbox = outbox
        self._is_connected = is_connected
        self._kills: CommandMemory[CancelReport] = CommandMemory()
        self._emergencies: CommandMemory[CancelReport] = CommandMemory()

    # -- start-up --------------------------------------------------------------------------------------------

    def announce(self, *, state_problem: str, origin: str) -> None:
        """At start: latch everything if the state file was unreadable, and log every HALTED scope (the latch is in
        every heartbeat; the risk governor, the trading states' one authority, mirrors it)."""
        if state_problem:
            self.latch.latch(GLOBAL_SCOPE, reason=f"state file unreadable: {state_problem}", origin=origin)
            self.halts.quarantine_state_file()
            self.halts.persist()
            self.outbox.alert("critical", f"gateway state file unreadable; starting HALTED: {state_problem}")
        for scope in self.latch.halted_scopes():
            rec = self.latch.scopes[scope]
            logger.warning(
                "gateway: {} is HALTED since epoch {} ({}); resume is an explicit command", scope, rec.epoch, rec.reason
            )

    # -- commands --------------------------------------------------------------------------------------------

    async def kill(self, kill: Kill) -> CancelReport:
        return await self._kills.once(kill.kill_id, lambda: self._do_kill(kill))

    async def emergency(self, cmd: EmergencyCancel) -> CancelReport:
        return await self._emergencies.once(
            cmd.command_id,
            lambda: self._do_sweep(
                cmd.command_id,
                cmd.scope,
                cmd.reason,
                kind="emergency cancel",
                cause=breaker_cause(cmd.command_id, cmd.reason),
                keep=self._keep(cmd.keep_protective),
            ),
        )

    async def cancel_scope(self, req: CancelScope, request_id: str) -> CancelReport:
        return await self._do_sweep(
            f"cancel-scope:{request_id or time.time_ns()}",
            req.scope,
            req.reason,
            kind="cancel scope",
            cause=scope_cause(req.scope, req.reason),
        )

    async def _do_kill(self, kill: Kill) -> CancelReport:
        scope = kill.scope
        record = self.latch.latch(scope, reason=kill.reason, origin=kill.origin, kill_id=kill.kill_id)
        latched_mono = time.monotonic()
        self.latch.add_pending(
            PendingSweep(
                command_id=kill.kill_id,
                scope=scope,
                kind="kill",
                reason=kill.reason,
                wall_ns=time.time_ns(),
                keep_protective=kill.keep_protective,
            )
        )
        # relay the kill itself at once (before the fsync below): the sender's own broadcast may come later (a CLI
        # connects and handshakes first) or never; every actor halts on it and de-duplicates by kill_id
        self.outbox.kill(kill)
        self.halts.persist()  # HALTED is durable before anything is cancelled
        logger.critical(
            "gateway: KILL {} scope {} epoch {} from {}: {}",
            kill.kill_id,
            scope,
            record.epoch,
            kill.origin or "?",
            kill.reason,
        )
        cause = kill_cause(kill.kill_id, kill.reason)
        purged = self.unsent.drop(scope, cause=cause)
        if not self._is_connected():
            detail = "disconnected from IB: HALTED is latched; the cancel sweep runs when the connection is back"
            self.outbox.alert("critical", f"kill {kill.kill_id} while disconnected: {detail}")
            return self._report(kill.kill_id, scope, None, state="HALTED", epoch=record.epoch, detail=detail)
        # a sweep already registered under this id (the risk governor's emergency cancel got here first) is this
        # kill's sweep; its confirmation counts only from a list requested after the latch
        keep = self._keep(kill.keep_protective)
        result = await self.sweeps.run(kill.kill_id, scope, not_before=latched_mono, cause=cause, keep=keep)
        if result.confirmed:
            self.latch.clear_pending(kill.kill_id)
            self.halts.persist()
        else:
            self.outbox.alert(
                "critical",
                f"kill {kill.kill_id}: {len(result.remaining)} order(s) still working after {result.elapsed_ms:.0f} ms",
                remaining=",".join(result.remaining[:50]),
            )
        detail = result.detail or (f"{purged} unsent order message(s) dropped" if purged else "")
        return self._report(kill.kill_id, scope, result, state="HALTED", epoch=record.epoch, detail=detail)

    def _keep(self, keep_protective: bool) -> Keep | None:
        return self.protective if keep_protective else None

    async def _do_sweep(
        self, command_id: str, scope: str, reason: str, *, kind: str, cause: str, keep: Keep | None = None
    ) -> CancelReport:
        logger.warning("gateway: {} {} scope {}: {}", kind, command_id, scope, reason or "-")
        purged = self.unsent.drop(scope, cause=cause)
        if not self._is_connected():
            return self._report(
                command_id,
                scope,
                None,
                state=self._state(scope),
                epoch=self.latch.epoch,
                detail="disconnected from IB: nothing could be cancelled",
            )
        result = await self.sweeps.run(command_id, scope, cause=cause, keep=keep)
        if not result.confirmed:
            self.outbox.alert(
                "critical",
                f"{kind} {command_id}: {len(result.remaining)} order(s) still working",
                remaining=",".join(result.remaining[:50]),
            )
        detail = result.detail or (f"{purged} unsent order message(s) dropped" if purged else "")
        return self._report(command_id, scope, result, state=self._state(scope), epoch=self.latch.epoch, detail=detail)

    def resume(self, req: Resume) -> CancelReport:
        released = self.latch.release(req.scope)
        if released:
            for sweep in list((self.latch.pending or {}).values()):
                if req.scope == GLOBAL_SCOPE or sweep.scope == req.scope:
                    self.latch.clear_pending(sweep.command_id)
            self.halts.persist()
            logger.warning(
                "gateway: RESUME {} (released {}) epoch {} from {}: {}",
                req.scope,
                ", ".join(released),
                self.latch.epoch,
                req.origin or "?",
                req.reason,
            )
            detail = f"released {', '.join(released)}"
        else:
            detail = f"{req.scope} was not halted"
        return CancelReport(
            command_id=f"resume:{self.latch.epoch}",
            scope=req.scope,
            trading_state=self._state(req.scope),
            epoch=self.latch.epoch,
            cancelled=0,
            remaining=0,
            confirmed=True,
            detail=detail,
        )

    # -- after a (re)connect ---------------------------------------------------------------------------------

    async def finish_pending(self, reason: str) -> None:
        """Finish every kill whose sweep was never confirmed (disconnected at the time, or a crash mid-sweep)."""
        for sweep in list((self.latch.pending or {}).values()):
            logger.warning(
                "gateway: finishing the unconfirmed {} sweep {} (scope {}) after {}",
                sweep.kind,
                sweep.command_id,
                sweep.scope,
                reason,
            )
            # a confirmation from before this connection does not count: the gap may have hidden anything
            cause = kill_cause(sweep.command_id, sweep.reason) if sweep.kind == "kill" else sweep.reason
            keep = self._keep(sweep.keep_protective)
            result = await self.sweeps.run(
                sweep.command_id, sweep.scope, not_before=time.monotonic(), cause=cause, keep=keep
            )
            if result.confirmed:
                self.latch.clear_pending(sweep.command_id)
                self.halts.persist()
            else:
                self.outbox.alert(
                    "critical",
                    f"kill {sweep.command_id}: {len(result.remaining)} order(s) still working after reconnect",
                    remaining=",".join(result.remaining[:50]),
                )

    # -- helpers ---------------------------------------------------------------------------------------------

    def _state(self, scope: str) -> TradingState:
        return "HALTED" if self.latch.is_halted(scope) else "ACTIVE"

    def _report(
        self,
        command_id: str,
        scope: str,
        result: SweepResult | None,
        *,
        state: TradingState,
        epoch: int,
        detail: str = "",
    ) -> CancelReport:
        if result is None:
            working = self.table.working(scope)
            return CancelReport(
                command_id=command_id,
                scope=scope,
                trading_state=state,
                epoch=epoch,
                cancelled=0,
                remaining=len(working),
                remaining_order_refs=[r.key for r in working][:REPORT_REFS],
                confirmed=False,
                detail=detail,
            )
        return CancelReport(
            command_id=command_id,
            scope=scope,
            trading_state=state,
            epoch=epoch,
            cancelled=result.cancelled,
            remaining=len(result.remaining),
            remaining_order_refs=result.remaining[:REPORT_REFS],
            elapsed_ms=result.elapsed_ms,
            confirmed=result.confirmed,
            detail=detail or result.detail,
        )
