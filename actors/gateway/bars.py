"""Real-time bars: IB's 5-second bars, one IB subscription per (contract, whatToShow, useRTH), aggregated upward.

IB offers real-time bars of 5 seconds only (reqRealTimeBars). The gateway subscribes once per contract, whatToShow
and useRTH, whoever asks and whatever bar size, and builds each requested size (a multiple of 5 s: 5 s, 1 min,
5 min, 1 h ...) from those bars: open of the first, highest high, lowest low, close of the last, volumes summed,
the WAP volume-weighted, counts summed. A bar is published (``bars.<conId>.<what>.<seconds>``) once its last 5-second
bar has arrived, or when a bar of the next interval arrives first (a gap in IB's bars: outside the regular session
with useRTH). Reference-counted per bar size: the last subscriber of the last size cancels IB's subscription;
after a reconnect every stream with subscribers is requested again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.convert import error_text
from actors.gateway.ib_data import IbData
from actors.gateway.outbox import Outbox
from bus import topics
from bus.barsizes import IB_BAR_SECONDS, bar_seconds
from bus.messages import Bar, BarEvent, BarsAck, Rejected, SubscribeBars, UnsubscribeBars, tag_of


@dataclass
class Aggregator:
    """Builds bars of ``seconds`` from 5-second bars; ``subscribers`` of this size."""

    seconds: int
    subscribers: set[str] = field(default_factory=set)
    start: int | None = None
    bar: Bar | None = None
    _wap_volume: float = 0.0

    def add(self, t: int, o: float, h: float, lo: float, c: float, volume: float, wap: float, count: int) -> list[Bar]:
        """One 5-second bar starting at epoch ``t``: the bars it completes (0, 1 or 2)."""
        done: list[Bar] = []
        start = t - t % self.seconds
        if self.start is not None and start != self.start and self.bar is not None:
            done.append(self.bar)  # the interval ended without its last 5-second bar (a gap in IB's bars)
            self.bar = None
        has_volume = volume >= 0  # IB's -1: no volume (MIDPOINT, BID, ASK)
        if self.bar is None or self.start != start:
            self.start = start
            self._wap_volume = 0.0
            self.bar = Bar(
                time=_iso(start),
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=0.0 if has_volume else -1.0,
                wap=None,
                count=0 if count >= 0 else None,
            )
        b = self.bar
        vol = b.volume + volume if has_volume and b.volume >= 0 else b.volume
        if volume > 0 and wap > 0:
            self._wap_volume += wap * volume
        self.bar = Bar(
            time=b.time,
            open=b.open,
            high=max(b.high, h),
            low=min(b.low, lo),
            close=c,
            volume=vol,
            wap=self._wap_volume / vol if vol > 0 and self._wap_volume > 0 else None,
            count=b.count + count if b.count is not None and count >= 0 else b.count,
        )
        if t + IB_BAR_SECONDS >= start + self.seconds:
            done.append(self.bar)
            self.bar = None
        return done


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass
class BarStream:
    """One IB real-time bar subscription and the bar sizes built from it."""

    qualified: Qualified
    what_to_show: str
    use_rth: bool
    sizes: dict[int, Aggregator] = field(default_factory=dict)
    ib_bars: Any = None

    @property
    def subscribers(self) -> int:
        return sum(len(a.subscribers) for a in self.sizes.values())


StreamKey = tuple[int, str, bool]


class BarFeed:
    """``SubscribeBars`` / ``UnsubscribeBars`` and the bars (see module docstring)."""

    def __init__(self, data: IbData, contracts: ContractCache, outbox: Outbox) -> None:
        self.data = data
        self.contracts = contracts
        self.outbox = outbox
        self.streams: dict[StreamKey, BarStream] = {}

    async def subscribe(self, req: SubscribeBars) -> BarsAck | Rejected:
        rtype = tag_of(SubscribeBars)
        try:
            seconds = bar_seconds(req.bar_size)
        except ValueError as exc:
            return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
        try:
            found = await self.contracts.resolve(req.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"cannot qualify {req.instrument.display}: {exc}", request_type=rtype
            )
        if not isinstance(found, Qualified):
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        key = (found.con_id, req.what_to_show, req.use_rth)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = BarStream(qualified=found, what_to_show=req.what_to_show, use_rth=req.use_rth)
        stream.sizes.setdefault(seconds, Aggregator(seconds)).subscribers.add(req.subscriber)
        try:
            self._start(stream)
        except ConnectionError as exc:  # stays registered; requested when the connection is back
            logger.warning("gateway: bars {} deferred: {}", found.info.display, error_text(exc))
        return self._ack(stream, seconds)

    def unsubscribe(self, req: UnsubscribeBars) -> BarsAck | Rejected:
        rtype = tag_of(UnsubscribeBars)
        try:
            seconds = bar_seconds(req.bar_size)
        except ValueError as exc:
            return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
        stream = self.streams.get((req.con_id, req.what_to_show, req.use_rth))
        agg = stream.sizes.get(seconds) if stream is not None else None
        if stream is None or agg is None or req.subscriber not in agg.subscribers:
            return Rejected(
                code="not_found",
                reason=f"{req.subscriber} has no {req.bar_size} bars of {req.con_id}",
                request_type=rtype,
            )
        agg.subscribers.discard(req.subscriber)
        ack = self._ack(stream, seconds)
        if not agg.subscribers:
            del stream.sizes[seconds]
        if not stream.sizes:
            self._cancel(stream)
            del self.streams[(req.con_id, req.what_to_show, req.use_rth)]
        return ack

    def _ack(self, stream: BarStream, seconds: int) -> BarsAck:
        info = stream.qualified.info
        agg = stream.sizes.get(seconds)
        return BarsAck(
            symbol=info.display,
            con_id=info.con_id,
            topic=topics.bars(info.con_id, stream.what_to_show, seconds, use_rth=stream.use_rth),
            bar_seconds=seconds,
            subscribers=len(agg.subscribers) if agg is not None else 0,
        )

    def _start(self, stream: BarStream) -> None:
        if stream.ib_bars is not None or not self.data.session.is_connected():
            return
        bars = self.data.real_time_bars(stream.qualified.contract, stream.what_to_show, stream.use_rth)
        stream.ib_bars = bars

        def on_update(ib_bars: Any, has_new_bar: bool) -> None:
            if has_new_bar and ib_bars:
                self._on_bar(stream, ib_bars[-1])

        bars.updateEvent += on_update
        logger.info("gateway: real-time bars {} {} started", stream.qualified.info.display, stream.what_to_show)

    def _cancel(self, stream: BarStream) -> None:
        if stream.ib_bars is not None and self.data.session.is_connected():
            try:
                self.data.cancel_real_time_bars(stream.ib_bars)
            except ConnectionError:
                pass
        stream.ib_bars = None
        logger.info("gateway: real-time bars {} {} stopped", stream.qualified.info.display, stream.what_to_show)

    def _on_bar(self, stream: BarStream, rb: Any) -> None:
        when = rb.time
        t = int(when.timestamp()) if isinstance(when, datetime) else int(when)
        info = stream.qualified.info
        for seconds, agg in stream.sizes.items():
            for bar in agg.add(t, rb.open_, rb.high, rb.low, rb.close, rb.volume, rb.wap, int(rb.count)):
                self.outbox.bar(
                    topics.bars(info.con_id, stream.what_to_show, seconds, use_rth=stream.use_rth),
                    BarEvent(
                        symbol=info.display,
                        con_id=info.con_id,
                        bar_seconds=seconds,
                        what_to_show=stream.what_to_show,
                        bar=bar,
                    ),
                )

    def on_disconnected(self) -> None:
        for stream in self.streams.values():
            stream.ib_bars = None

    def drop(self) -> None:
        """IB lost its market data (1101): cancel what is left, so :meth:`restart` requests everything again."""
        for stream in self.streams.values():
            self._cancel(stream)

    def restart(self) -> None:
        for stream in self.streams.values():
            try:
                self._start(stream)
            except ConnectionError as exc:
                logger.warning("gateway: bars {} not restarted: {}", stream.qualified.info.display, error_text(exc))

    def counts(self) -> dict[str, int]:
        return {f"{s.qualified.info.display}.{s.what_to_show}": s.subscribers for s in self.streams.values()}
