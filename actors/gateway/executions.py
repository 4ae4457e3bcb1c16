"""Executions and commission reports: each published once, journalled right after, whatever path brought it.

The session hands over every execution (live, or an answer to reqExecutions after a gap) and every commission
report (see :mod:`actors.gateway.ib`); :class:`ExecutionFeed` de-duplicates them by execId against the
:class:`~actors.gateway.persist.ExecJournal`, marks corrections (a later revision of an execution key), publishes,
and journals (``write(2)`` at once, one fsync per batch of executions).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.convert import commission_event, exec_key, exec_revision, fill_event
from actors.gateway.outbox import Outbox
from actors.gateway.persist import COMMISSION, FILL, ExecJournal

#: Remember exec id -> (orderRef, symbol, conId) for this many executions (commission reports refer to them).
EXEC_INFO_MEMORY = 200_000


class ExecutionFeed:
    """Fills (``fill.<conId>``) and commissions (``commission.<conId>``), exactly once across restarts.
    ``replayed`` counts the executions that arrived as answers (not live) since the last connect."""

    def __init__(self, journal: ExecJournal, outbox: Outbox) -> None:
        self.journal = journal
        self.outbox = outbox
        self.replayed = 0
        self._exec_keys: dict[str, str] = {exec_key(i): i for i in journal.fills}
        self._exec_info: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
        self._flush_pending = False

    def on_execution(self, contract: lib.Contract, execution: lib.Execution, is_live: bool) -> None:
        exec_id = execution.execId
        ev = fill_event(contract, execution, is_correction=False, replayed=not is_live)
        symbol = ev.instrument.display
        self._exec_info[exec_id] = (execution.orderRef or "", symbol, ev.instrument.con_id)
        while len(self._exec_info) > EXEC_INFO_MEMORY:
            self._exec_info.popitem(last=False)
        if self.journal.has_fill(exec_id):
            return
        key = exec_key(exec_id)
        previous = self._exec_keys.get(key)
        is_correction = (previous is not None and previous != exec_id) or exec_revision(exec_id) > 1
        if is_correction:
            ev = fill_event(contract, execution, is_correction=True, replayed=not is_live)
        self.outbox.fill(ev)
        self._journal(FILL, exec_id)
        self._exec_keys[key] = exec_id
        self._schedule_flush()
        if not is_live:
            self.replayed += 1
        logger.info(
            "gateway: fill {} {} {} {:g} @ {:g} order {} (permId {}){}{}",
            exec_id,
            ev.side,
            symbol,
            ev.quantity,
            ev.price,
            ev.order_ref or "-",
            ev.perm_id,
            " CORRECTION" if is_correction else "",
            " replayed" if not is_live else "",
        )

    def on_commission(self, report: lib.CommissionReport) -> None:
        exec_id = report.execId
        if not exec_id or self.journal.has_commission(exec_id):
            return
        order_ref, symbol, con_id = self._exec_info.get(exec_id, ("", "", 0))
        self.outbox.commission(commission_event(report, order_ref=order_ref, symbol=symbol, con_id=con_id))
        self._journal(COMMISSION, exec_id)
        self._schedule_flush()

    def _journal(self, kind: str, exec_id: str) -> None:
        """Journal a published execution right away (a killed process loses nothing), fsync per batch."""
        try:
            self.journal.record(kind, exec_id)
        except OSError as exc:
            logger.critical("gateway: exec journal write failed for {}: {}", exec_id, exc)
            self.outbox.alert("critical", f"exec journal write failed: {exc}; a restart may publish {exec_id} again")

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        self._flush_pending = True

        def flush() -> None:
            self._flush_pending = False
            try:
                self.journal.flush()
            except OSError as exc:
                logger.critical("gateway: exec journal write failed: {}", exc)
                self.outbox.alert("critical", f"exec journal write failed: {exc}")

        asyncio.get_running_loop().call_soon(flush)  # one fsync per batch of executions

    def close(self) -> None:
        try:
            self.journal.close()
        except OSError as exc:
            logger.error("gateway: could not flush the exec journal: {}", exc)
