"""Kill, emergency cancel, cancel-scope and resume: the gateway's halt latch and verified cancel sweeps.

A mixin of :class:`~actors.gateway.actor.GatewayActor` (it uses the actor's latch, book, session and sweeper).
Semantics in docs/gateway.md: a kill latches HALTED and persists it *before* acting, drops unsent order messages of
its scope, cancels (globally for scope ``all``, one by one otherwise), verifies against IB's open-order list until
nothing works, and answers with a :class:`~bus.messages.CancelReport`. Kill and emergency cancel run once per id:
the direct request and the bus copy share one result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from actors.gateway.book import OrderRecord
from actors.gateway.cancels import SweepResult
from actors.gateway.halts import GLOBAL_SCOPE
from actors.gateway.pacing import Priority, place_order_id
from actors.gateway.persist import PendingSweep
from bus.messages import CancelReport, CancelScope, EmergencyCancel, Kill, Resume, TradingStateEvent
from bus.reqrep import CallContext

#: How many kill/emergency command ids are remembered for de-duplication (direct request vs bus copy).
COMMAND_MEMORY = 10_000


class KillSwitchMixin:
    """Kill / EmergencyCancel / CancelScope / Resume handling for the gateway actor."""

    _commands: Any
    latch: Any
    book: Any
    session: Any
    sweeper: Any
    settings: Any

    def _purge_unsent(self, scope: str | None = None, rec_only: OrderRecord | None = None) -> int:
        """Drop queued, not yet transmitted placeOrders (a kill must not let them out after its cancels)."""
        cid = self.settings.client_id

        def matches(msg: str) -> bool:
            oid = place_order_id(msg)
            if oid is None:
                return False
            rec = self.book.find_by_order_id(cid, oid)
            if rec_only is not None:
                return rec is rec_only
            return rec is None or scope is None or rec.in_scope(scope)

        purged = self.session.sender.purge(matches, Priority.ORDER)
        for msg in purged:
            oid = place_order_id(msg)
            rec = self.book.find_by_order_id(cid, oid) if oid is not None else None
            if rec is None or rec.transmitted:
                continue  # an amendment of a live order: the order itself is cancelled by the sweep
            if rec.trade is not None:
                rec.trade.orderStatus.status = "Cancelled"
            ev = self.book.observe(rec, status="Cancelled", filled=0.0, remaining=rec.remaining, avg_fill_price=0.0,
                                   reason="cancelled before it was transmitted to IB")
            if ev is not None:
                self._publish_status(ev)
        return len(purged)

    def _report(self, command_id: str, scope: str, result: SweepResult | None, *, state: str, epoch: int,
                detail: str = "") -> CancelReport:
        if result is None:
            working = self.book.working(scope)
            return CancelReport(command_id=command_id, scope=scope, trading_state=state, epoch=epoch,  # type: ignore
                                cancelled=0, remaining=len(working),
                                remaining_order_refs=[r.key for r in working][:500], confirmed=False, detail=detail)
        return CancelReport(command_id=command_id, scope=scope, trading_state=state, epoch=epoch,  # type: ignore
                            cancelled=result.cancelled, remaining=len(result.remaining),
                            remaining_order_refs=result.remaining[:500], elapsed_ms=result.elapsed_ms,
                            confirmed=result.confirmed, detail=detail or result.detail)

    async def _once(self, command_id: str, run: Callable[[], Any]) -> CancelReport:
        """Run a kill/emergency command once per id; the direct request and the bus copy share the result."""
        fut = self._commands.get(command_id)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._commands[command_id] = fut
        while len(self._commands) > COMMAND_MEMORY:
            self._commands.popitem(last=False)
        try:
            report = await run()
        except BaseException as exc:
            fut.set_exception(exc)
            self._commands.pop(command_id, None)
            raise
        fut.set_result(report)
        return report

    async def _kill(self, kill: Kill) -> CancelReport:
        return await self._once(kill.kill_id, lambda: self._do_kill(kill))

    async def _do_kill(self, kill: Kill) -> CancelReport:
        scope = kill.scope
        record = self.latch.latch(scope, reason=kill.reason, origin=kill.origin, kill_id=kill.kill_id)
        self.latch.add_pending(PendingSweep(command_id=kill.kill_id, scope=scope, kind="kill", reason=kill.reason,
                                            wall_ns=time.time_ns()))
        # relay the kill itself at once (before the fsync below): the sender's own broadcast may come later (a CLI
        # connects and handshakes first) or never; every actor halts on it and de-duplicates by kill_id
        self.publish("control.kill", kill)
        self._persist()  # HALTED is durable before anything is cancelled
        self.publish("state.trading", TradingStateEvent(scope=scope, state="HALTED", epoch=record.epoch,
                                                        reason=kill.reason, origin=kill.origin))
        logger.critical("gateway: KILL {} scope {} epoch {} from {}: {}", kill.kill_id, scope, record.epoch,
                        kill.origin or "?", kill.reason)
        purged = self._purge_unsent(scope)
        if not self.session.is_connected():
            detail = "disconnected from IB: HALTED is latched; the cancel sweep runs when the connection is back"
            self._alert("critical", f"kill {kill.kill_id} while disconnected: {detail}")
            return self._report(kill.kill_id, scope, None, state="HALTED", epoch=record.epoch, detail=detail)
        result = await self.sweeper.sweep(scope, use_global=scope == GLOBAL_SCOPE,
                                          timeout_s=self.settings.kill_verify_timeout_s)
        if result.confirmed:
            self.latch.clear_pending(kill.kill_id)
            self._persist()
        else:
            self._alert("critical", f"kill {kill.kill_id}: {len(result.remaining)} order(s) still working after "
                        f"{result.elapsed_ms:.0f} ms", remaining=",".join(result.remaining[:50]))
        detail = result.detail or (f"{purged} unsent order message(s) dropped" if purged else "")
        return self._report(kill.kill_id, scope, result, state="HALTED", epoch=record.epoch, detail=detail)

    async def _emergency(self, cmd: EmergencyCancel) -> CancelReport:
        return await self._once(cmd.command_id, lambda: self._do_sweep(cmd.command_id, cmd.scope, cmd.reason,
                                                                        kind="emergency cancel"))

    async def _cancel_scope(self, req: CancelScope, ctx: CallContext) -> CancelReport:
        return await self._do_sweep(f"cancel-scope:{ctx.request_id or time.time_ns()}", req.scope, req.reason,
                                    kind="cancel scope")

    async def _do_sweep(self, command_id: str, scope: str, reason: str, *, kind: str) -> CancelReport:
        logger.warning("gateway: {} {} scope {}: {}", kind, command_id, scope, reason or "-")
        state = "HALTED" if self.latch.is_halted(scope) else "ACTIVE"
        purged = self._purge_unsent(scope)
        if not self.session.is_connected():
            return self._report(command_id, scope, None, state=state, epoch=self.latch.epoch,
                                detail="disconnected from IB: nothing could be cancelled")
        result = await self.sweeper.sweep(scope, use_global=scope == GLOBAL_SCOPE,
                                          timeout_s=self.settings.kill_verify_timeout_s)
        if not result.confirmed:
            self._alert("critical", f"{kind} {command_id}: {len(result.remaining)} order(s) still working",
                        remaining=",".join(result.remaining[:50]))
        detail = result.detail or (f"{purged} unsent order message(s) dropped" if purged else "")
        return self._report(command_id, scope, result, state=state, epoch=self.latch.epoch, detail=detail)

    def _resume(self, req: Resume) -> CancelReport:
        released = self.latch.release(req.scope)
        if released:
            for sweep in list((self.latch.pending or {}).values()):
                if req.scope == GLOBAL_SCOPE or sweep.scope == req.scope:
                    self.latch.clear_pending(sweep.command_id)
            self._persist()
            for scope in released:
                self.publish("state.trading", TradingStateEvent(scope=scope, state="ACTIVE", epoch=self.latch.epoch,
                                                                reason=req.reason, origin=req.origin))
            logger.warning("gateway: RESUME {} (released {}) epoch {} from {}: {}", req.scope, ", ".join(released),
                           self.latch.epoch, req.origin or "?", req.reason)
            detail = f"released {', '.join(released)}"
        else:
            detail = f"{req.scope} was not halted"
        state = "HALTED" if self.latch.is_halted(req.scope) else "ACTIVE"
        return CancelReport(command_id=f"resume:{self.latch.epoch}", scope=req.scope,
                            trading_state=state,  # type: ignore[arg-type]
                            epoch=self.latch.epoch, cancelled=0, remaining=0, confirmed=True, detail=detail)
