"""The governor's side of a kill: halt the scope here (once per kill id, whether the request or the
``control.kill`` broadcast arrives first) and, for the direct request, forward an ``EmergencyCancel`` to the
gateway that carries the kill's own id as its command id, so the gateway runs one sweep per kill (it
de-duplicates by that id) however many paths the kill takes.

The request is answered within :data:`KILL_REPLY_WAIT_S`: with the gateway's report when it came in time,
otherwise with what this governor counts as still working in the scope (the cancel keeps being retried).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from loguru import logger

from actors.risk.cancels import EmergencyCanceller
from actors.risk.state_keeper import TradingStateKeeper
from bus.messages import CancelReport, Kill, TradingState

#: how many kill ids are remembered (the request and the broadcast of one kill halt once)
KILL_MEMORY = 1000
#: how long a direct Kill waits for the gateway's acknowledgement of the forwarded cancel before answering
KILL_REPLY_WAIT_S = 1.5
#: order refs listed in a report made without the gateway's answer
REPORT_REFS = 100

#: ``working_in_scope(scope)``: order refs this governor counts as working in a scope
WorkingInScope = Callable[[str], list[str]]


class KillSwitch:
    """Kill requests and broadcasts (see module docstring)."""

    def __init__(
        self, states: TradingStateKeeper, canceller: EmergencyCanceller, working_in_scope: WorkingInScope
    ) -> None:
        self._states = states
        self._canceller = canceller
        self._working_in_scope = working_in_scope
        self.seen: OrderedDict[str, None] = OrderedDict()

    def on_broadcast(self, kill: Kill, sender: str) -> None:
        """The bus copy: halt here only (the operator's tooling sent the Kill to the gateway itself)."""
        self._halt(kill, sender)

    async def on_request(self, kill: Kill, sender: str) -> CancelReport:
        """Halt, forward the emergency cancel under the kill's id, and report."""
        t0 = time.monotonic()
        self._halt(kill, sender)
        task = self._canceller.send(
            kill.scope,
            f"kill {kill.kill_id}: {kill.reason}",
            command_id=kill.kill_id,
            keep_protective=kill.keep_protective,
        )
        done, _ = await asyncio.wait({task}, timeout=KILL_REPLY_WAIT_S)
        scope_state: TradingState = self._states.state_of(kill.scope).state
        report = task.result().report if done and not task.cancelled() and task.exception() is None else None
        elapsed_ms = (time.monotonic() - t0) * 1000
        if report is not None:
            return CancelReport(
                command_id=kill.kill_id,
                scope=kill.scope,
                trading_state=scope_state,
                epoch=self._states.epoch,
                cancelled=report.cancelled,
                remaining=report.remaining,
                remaining_order_refs=report.remaining_order_refs,
                elapsed_ms=elapsed_ms,
                confirmed=report.confirmed,
                detail=f"halted by risk; gateway: {report.detail}",
            )
        working = self._working_in_scope(kill.scope)
        return CancelReport(
            command_id=kill.kill_id,
            scope=kill.scope,
            trading_state=scope_state,
            epoch=self._states.epoch,
            cancelled=0,
            remaining=len(working),
            remaining_order_refs=working[:REPORT_REFS],
            elapsed_ms=elapsed_ms,
            confirmed=False,
            detail="halted by risk; the gateway has not acknowledged the emergency cancel yet (still retrying)",
        )

    def _halt(self, kill: Kill, sender: str) -> None:
        if kill.kill_id in self.seen:
            return
        self.seen[kill.kill_id] = None
        while len(self.seen) > KILL_MEMORY:
            self.seen.popitem(last=False)
        logger.critical(
            "risk: KILL {} scope={} from {}: {}", kill.kill_id, kill.scope, kill.origin or sender, kill.reason
        )
        self._states.kill(kill.scope, kill.kill_id, kill.reason, kill.origin or sender)
