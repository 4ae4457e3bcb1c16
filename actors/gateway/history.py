"""Historical bars for every strategy through the one IB connection: cached, coalesced, paced, fair.

``GetHistoricalBars`` is answered in this order:

1. the contract is qualified (the usual refusals);
2. an identical request answered recently is served from the cache (``cached=True``): within
   :data:`CACHE_TTL_NOW_S` for a window ending now, :data:`CACHE_TTL_FIXED_S` for a fixed end; IB's refusals are
   kept for IB's identical-request window, so an identical request is never sent twice within it;
3. an identical request already waiting or in flight is joined (one IB request, every caller gets the answer);
4. otherwise the request joins its caller's queue. A dispatcher serves the callers round robin (one strategy
   asking for a hundred windows does not hold back another asking for one), sending a request only when IB's
   pacing rules allow it (:mod:`.history_pacing`). Historical requests travel in the market-data class of the
   outbound budget (:mod:`.pacing`), below cancels, orders and other requests.

A caller that already has :data:`MAX_QUEUED_PER_CALLER` requests waiting, or whose request could not be sent within
:data:`MAX_WAIT_S`, gets :class:`~bus.messages.PacingRefused` with ``retry_after_s`` (when IB's rules would allow
it): IB never sees a request that breaks its pacing, and no caller waits without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from loguru import logger

from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.convert import error_text
from actors.gateway.history_pacing import IDENTICAL_WINDOW_S, WINDOW_MARGIN_S, HistoryKey, HistoryPacing
from actors.gateway.ib_data import IbData, IbDataError
from bus.messages import (
    MAX_BARS,
    Bar,
    GetHistoricalBars,
    HistoricalBarsReply,
    PacingRefused,
    Rejected,
    tag_of,
)

#: Cache lifetime of an answer for a window ending now (the last bar moves on) and for a fixed end.
CACHE_TTL_NOW_S = IDENTICAL_WINDOW_S + WINDOW_MARGIN_S + 5.0
CACHE_TTL_FIXED_S = 600.0
#: IB's refusals are remembered as long as IB would refuse an identical request anyway.
REFUSAL_TTL_S = IDENTICAL_WINDOW_S + WINDOW_MARGIN_S
#: Answers kept at most (oldest dropped first).
MAX_CACHE_ENTRIES = 256
#: Requests one caller may have waiting; more are refused with a retry-after.
MAX_QUEUED_PER_CALLER = 4
#: Longest a request waits for its turn before it is refused with a retry-after.
MAX_WAIT_S = 15.0
#: The refusal code of IB's own answer (162 no data, 321 invalid request ...), with IB's code in the reason.
HISTORY_CODE = "history"

Answer = HistoricalBarsReply | Rejected


def bar_of(b: Any) -> Bar:
    """One library BarData -> :class:`Bar` (``time`` in ISO 8601: UTC datetime, or the date of daily bars)."""
    when = b.date
    if isinstance(when, datetime):
        text = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    elif isinstance(when, date):
        text = when.isoformat()
    else:
        text = str(when)
    count = int(getattr(b, "barCount", -1) or 0)
    wap = float(getattr(b, "average", -1.0) or 0.0)
    has_trades = count > 0
    return Bar(
        time=text,
        open=float(b.open),
        high=float(b.high),
        low=float(b.low),
        close=float(b.close),
        volume=float(b.volume),
        wap=wap if has_trades and wap > 0 else None,
        count=count if has_trades else None,
    )


def _new_future() -> asyncio.Future[Answer | PacingRefused]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Pending:
    """One request waiting for its turn (or in flight): every caller asking the same waits on ``future``."""

    key: HistoryKey
    qualified: Qualified
    req: GetHistoricalBars
    caller: str
    future: asyncio.Future[Answer | PacingRefused] = field(default_factory=lambda: _new_future())
    sent: bool = False


class HistoryService:
    """``GetHistoricalBars`` (see module docstring): cache, coalescing, IB's pacing and a fair queue per caller."""

    def __init__(self, data: IbData, contracts: ContractCache, *, pacing: HistoryPacing | None = None) -> None:
        self.data = data
        self.contracts = contracts
        self.pacing = pacing or HistoryPacing()
        self._cache: OrderedDict[HistoryKey, tuple[float, Answer]] = OrderedDict()
        self._pending: dict[HistoryKey, Pending] = {}
        self._queues: OrderedDict[str, deque[Pending]] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.served_from_cache = 0
        self.refused_for_pacing = 0

    # -- the request -------------------------------------------------------------------------------------------

    async def get(self, req: GetHistoricalBars, caller: str) -> HistoricalBarsReply | PacingRefused | Rejected:
        rtype = tag_of(GetHistoricalBars)
        try:
            found = await self.contracts.resolve(req.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"cannot qualify {req.instrument.display}: {exc}", request_type=rtype
            )
        if not isinstance(found, Qualified):
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        key = HistoryKey(
            con_id=found.con_id,
            exchange=found.info.instrument.exchange,
            end=req.end,
            duration=req.duration,
            bar_size=req.bar_size,
            what_to_show=req.what_to_show,
            use_rth=req.use_rth,
        )
        now = time.monotonic()
        hit = self._cached(key, now)
        if hit is not None:
            self.served_from_cache += 1
            return hit
        pending = self._pending.get(key)
        if pending is None:
            queue = self._queues.get(caller)
            if queue is not None and len(queue) >= MAX_QUEUED_PER_CALLER:
                return self._refuse(key, now, f"{caller} already has {len(queue)} historical requests waiting")
            pending = Pending(key=key, qualified=found, req=req, caller=caller)
            self._pending[key] = pending
            self._queues.setdefault(caller, deque()).append(pending)
            self._ensure_dispatcher()
            self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), MAX_WAIT_S)
        except TimeoutError:
            if pending.sent:  # IB has it: its answer comes within the request's own timeout
                return await pending.future
            refusal = self._refuse(key, time.monotonic(), f"not sent within {MAX_WAIT_S:g} s")
            self._withdraw(pending, refusal)
            return refusal

    def _cached(self, key: HistoryKey, now: float) -> Answer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if now >= expires:
            del self._cache[key]
            return None
        if isinstance(answer, HistoricalBarsReply):
            return HistoricalBarsReply(symbol=answer.symbol, con_id=answer.con_id, bars=answer.bars, cached=True)
        return answer

    def _keep(self, key: HistoryKey, answer: Answer, now: float) -> None:
        if isinstance(answer, HistoricalBarsReply):
            ttl = CACHE_TTL_NOW_S if not key.end else CACHE_TTL_FIXED_S
        else:
            ttl = REFUSAL_TTL_S
        self._cache[key] = (now + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def _refuse(self, key: HistoryKey, now: float, why: str) -> PacingRefused:
        self.refused_for_pacing += 1
        ahead = sum(p.key.weight for q in self._queues.values() for p in q)
        retry = max(0.5, self.pacing.next_allowed(key, now, ahead=ahead) - now)
        logger.info("gateway: history {} refused for pacing ({}), retry after {:.1f} s", key, why, retry)
        return PacingRefused(
            reason=f"IB's historical pacing: {why}",
            retry_after_s=round(retry, 3),
            request_type=tag_of(GetHistoricalBars),
        )

    def _withdraw(self, pending: Pending, refusal: PacingRefused) -> None:
        """Take a request out of its queue; whoever joined it gets the same refusal."""
        queue = self._queues.get(pending.caller)
        if queue is not None and pending in queue:
            queue.remove(pending)
            if not queue:
                del self._queues[pending.caller]
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        if not pending.future.done():
            pending.future.set_result(refusal)

    # -- the dispatcher ------------------------------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch(), name="gateway.history")

    def _next(self, now: float) -> tuple[Pending | None, float | None]:
        """The next request to send (round robin over callers, each caller's oldest first), or when to look again."""
        earliest: float | None = None
        for caller in list(self._queues):
            head = self._queues[caller][0]
            at = self.pacing.next_allowed(head.key, now)
            if at <= now:
                self._queues.move_to_end(caller)  # this caller goes to the back of the round
                queue = self._queues[caller]
                queue.popleft()
                if not queue:
                    del self._queues[caller]
                return head, None
            earliest = at if earliest is None else min(earliest, at)
        return None, earliest

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            pending, wait_until = self._next(now)
            if pending is not None:
                pending.sent = True
                self.pacing.record(pending.key, now)
                self.sent += 1
                task = asyncio.create_task(self._ask(pending))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                continue
            if not self._queues:
                await self._wake.wait()
                continue
            timeout = max(0.0, (wait_until or now) - now)
            try:  # the next slot, or earlier when a new request arrives (it may be for another contract)
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _ask(self, pending: Pending) -> None:
        key, req, q = pending.key, pending.req, pending.qualified
        rtype = tag_of(GetHistoricalBars)
        answer: Answer
        try:
            bars = await self.data.historical_bars(
                q.contract,
                end=req.end,
                duration=req.duration,
                bar_size=req.bar_size,
                what_to_show=req.what_to_show,
                use_rth=req.use_rth,
            )
            answer = HistoricalBarsReply(
                symbol=q.info.display, con_id=q.con_id, bars=[bar_of(b) for b in bars[-MAX_BARS:]]
            )
            logger.info(
                "gateway: history {} {} {} {}: {} bars",
                q.info.display,
                req.duration,
                req.bar_size,
                req.what_to_show,
                len(answer.bars),
            )
        except IbDataError as exc:
            answer = Rejected(code=HISTORY_CODE, reason=str(exc)[:500], request_type=rtype)
            logger.warning("gateway: history {} refused by IB: {}", q.info.display, exc)
        except (TimeoutError, ConnectionError) as exc:
            answer = Rejected(code="disconnected", reason=f"IB did not answer: {error_text(exc)}", request_type=rtype)
        if not isinstance(answer, Rejected) or answer.code == HISTORY_CODE:
            self._keep(key, answer, time.monotonic())
        if self._pending.get(key) is pending:
            del self._pending[key]
        if not pending.future.done():
            pending.future.set_result(answer)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._inflight):
            task.cancel()

    def counts(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "cached": self.served_from_cache,
            "refused": self.refused_for_pacing,
            "queued": sum(len(q) for q in self._queues.values()),
        }
