"""Cancel every working order in a scope, and verify against IB's own list until nothing works.

IB is known not to cancel some ``PreSubmitted`` orders on reqGlobalCancel, so a kill never trusts the global
cancel alone:

1. scope ``all`` sends reqGlobalCancel (one message, every client's orders); a narrower scope cancels its
   orders one by one;
2. it asks IB for every open order (reqAllOpenOrders). The request travels the same socket after the cancels,
   so the answer reflects them; orders IB still lists as working are cancelled one by one (orders of another
   client id cannot be cancelled by id from this connection: a further global cancel covers them when the
   scope is ``all``);
3. it waits, on status events and never on a fixed sleep, until those orders are done, the book has been quiet
   for :data:`QUIET_S`, or the deadline passes, and goes back to 2.

It stops when IB lists nothing working in the scope (``confirmed``) or at the deadline (``remaining`` lists what
is still working).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from actors.gateway.book import CANCELLED, TERMINAL, OrderBook, OrderRecord

#: A round ends when the book saw no status change for this long (orders IB will not report on, e.g. another
#: client's, must not hold the sweep until the deadline).
QUIET_S = 0.25
#: Re-send a cancel for an order still listed as working only after this long (IB may be slow to confirm).
CANCEL_RESEND_S = 1.0
#: Bound for one reqAllOpenOrders round trip.
LIST_TIMEOUT_S = 5.0


@dataclass
class SweepResult:
    scope: str
    cancelled: int = 0
    remaining: list[str] = field(default_factory=list)
    confirmed: bool = False
    elapsed_ms: float = 0.0
    rounds: int = 0
    individual_cancels: int = 0
    global_cancels: int = 0
    detail: str = ""


class CancelSweeper:
    """Runs sweeps against a session (``global_cancel``, ``cancel``, ``all_open_orders``) and the order book."""

    def __init__(self, session: Any, book: OrderBook, *, client_id: Callable[[], int],
                 ib_status: Callable[[Any], str]) -> None:
        self.session = session
        self.book = book
        self._client_id = client_id
        self._ib_status = ib_status

    def cancel_one(self, rec: OrderRecord) -> bool:
        """Send a cancel for one of this client's orders; False if it is not ours to cancel by id."""
        if rec.trade is None or rec.client_id != self._client_id():
            return False
        rec.cancel_sent_mono = time.monotonic()
        self.session.cancel(rec.trade.order)
        return True

    async def _settle(self, pending: list[OrderRecord], round_start: float, deadline: float) -> None:
        """Wait for every pending order to be done (a change seen this round), a quiet book, or the deadline."""
        def settled() -> bool:
            return all(r.is_done and (r.done_mono or 0.0) >= round_start for r in pending)

        while not settled():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not await self.book.changed.wait(min(QUIET_S, left)):
                return

    def _recancel(self, working: list[OrderRecord], result: SweepResult, use_global: bool) -> None:
        """Cancel again what is still working: ours by id (not more often than CANCEL_RESEND_S), other
        clients' through one more global cancel when the scope allows it."""
        need_global = False
        for rec in working:
            if rec.client_id == self._client_id() and rec.trade is not None:
                if time.monotonic() - rec.cancel_sent_mono >= CANCEL_RESEND_S:
                    self.cancel_one(rec)
                    result.individual_cancels += 1
            else:
                need_global = True
        if need_global and use_global:
            self.session.global_cancel()
            result.global_cancels += 1

    async def sweep(self, scope: str, *, use_global: bool, timeout_s: float) -> SweepResult:
        start = time.monotonic()
        deadline = start + timeout_s
        result = SweepResult(scope=scope)
        targets: dict[str, OrderRecord] = {r.key: r for r in self.book.working(scope)}
        if use_global:
            self.session.global_cancel()
            result.global_cancels += 1
        else:
            for rec in list(targets.values()):
                if self.cancel_one(rec):
                    result.individual_cancels += 1
            await self._settle(list(targets.values()), start, deadline)
        vanished_external: set[str] = set()
        listed_before: dict[str, OrderRecord] = {}
        while True:
            result.rounds += 1
            round_start = time.monotonic()
            try:
                listed = await self.session.all_open_orders(max(0.1, min(LIST_TIMEOUT_S, deadline - round_start)))
            except asyncio.TimeoutError:
                # a slow list (a thousand open orders on a loaded host) is not a reason to give up while the
                # deadline allows: re-cancel what we know is working and ask again
                result.detail = f"open-order list timed out after {LIST_TIMEOUT_S:g}s (round {result.rounds})"
                result.remaining = sorted(r.key for r in targets.values() if r.is_working)
                if time.monotonic() >= deadline:
                    break
                self._recancel([r for r in targets.values() if r.is_working], result, use_global)
                continue
            except (ConnectionError, OSError) as exc:
                result.detail = f"could not list open orders: {exc!r}"
                result.remaining = sorted(r.key for r in targets.values() if r.is_working)
                break
            working: list[OrderRecord] = []
            listed_now: dict[str, OrderRecord] = {}
            for trade in listed:
                rec, _ = self.book.attach(trade)
                listed_now[rec.key] = rec
                if self._ib_status(trade) in TERMINAL or not rec.in_scope(scope):
                    continue
                working.append(rec)
                targets.setdefault(rec.key, rec)
            for key, rec in listed_before.items():
                if key not in listed_now and rec.client_id != self._client_id() and not rec.is_done:
                    vanished_external.add(key)  # another client's order: IB sends us no status, it left the list
            listed_before = {r.key: r for r in working}
            result.remaining = sorted(r.key for r in working)
            if not working:
                result.confirmed = True
                break
            if time.monotonic() >= deadline:
                break
            self._recancel(working, result, use_global)
            await self._settle(working, round_start, deadline)
        result.cancelled = sum(1 for r in targets.values()
                               if r.status in CANCELLED and (r.done_mono or 0.0) >= start) + len(vanished_external)
        result.elapsed_ms = (time.monotonic() - start) * 1000.0
        logger.info("gateway: cancel sweep {} done in {:.0f} ms: cancelled {}, remaining {}, confirmed {} "
                    "({} rounds, {} individual cancels, {} global){}", scope, result.elapsed_ms, result.cancelled,
                    len(result.remaining), result.confirmed, result.rounds, result.individual_cancels,
                    result.global_cancels, f" [{result.detail}]" if result.detail else "")
        return result
