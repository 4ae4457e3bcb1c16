"""The strategy's data API (issue 17): history, real-time bars, contract details and search, what-if, daily P&L.

Everything goes through the gateway, the one process that talks to IB: a strategy never opens an IB connection of
its own for data (no client-id conflicts, no pacing violations). :class:`DataApi` is a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient` (``client.data``; the client exposes its methods under the same
names); the blocking client wraps them. Pandas is optional: ``as_dataframe=True`` needs it installed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from bus import topics
from bus.barsizes import bar_seconds
from bus.messages import (
    Bar,
    BarEvent,
    BarsAck,
    ContractDetailsReply,
    ContractInfo,
    ContractSearchReply,
    DailyPnlReply,
    GetContractDetails,
    GetDailyPnl,
    GetHistoricalBars,
    HistoricalBarsReply,
    Instrument,
    OrderSpec,
    PacingRefused,
    RealTimeWhat,
    Rejected,
    SearchContracts,
    SubscribeBars,
    UnsubscribeBars,
    WhatIfOrder,
    WhatIfReply,
    WhatToShow,
    tag_of,
)
from bus.reqrep import AsyncClient
from sdk.endpoints import instrument as as_instrument
from sdk.endpoints import validated
from sdk.errors import OrderRejected, UnexpectedReply

#: How long a history request may take end to end: its turn in the gateway's fair queue (at most 15 s) and IB's
#: answer (at most 30 s).
HISTORY_TIMEOUT_S = 50.0
#: The columns of :func:`bars_frame`.
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "wap", "count")


class PacingError(OrderRejected):
    """The gateway did not send a data request now: IB's pacing rules would be broken (or this strategy already has
    too many waiting). Ask again after ``retry_after_s`` seconds. ``code`` is ``pacing``."""

    def __init__(self, reason: str, retry_after_s: float, *, request_type: str = "") -> None:
        super().__init__("pacing", f"{reason} (retry after {retry_after_s:g} s)", request_type=request_type)
        self.retry_after_s = retry_after_s


class DataHost(Protocol):
    """What the data API needs of its client: the gateway connection, the client's name and bus subscriptions."""

    name: str

    def gateway_client(self) -> AsyncClient: ...

    def add_topic(self, topic: str) -> Awaitable[None]: ...

    def qualify(self, instrument: str | Instrument) -> Awaitable[ContractInfo]: ...

    def drop_topic(self, topic: str) -> None: ...


def end_text(end: datetime | str | None) -> str:
    """IB's endDateTime: "" for now, a datetime as UTC ``YYYYMMDD-HH:MM:SS`` (naive means UTC), text as given."""
    if end is None:
        return ""
    if isinstance(end, datetime):
        when = end if end.tzinfo else end.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")
    return end


def bars_frame(bars: list[Bar]) -> Any:
    """Bars as a pandas DataFrame indexed by time (UTC timestamps; dates for daily bars). Needs pandas."""
    try:
        import pandas as pd  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pandas is optional for the SDK
        raise ImportError("as_dataframe=True needs pandas: pip install pandas") from exc
    frame = pd.DataFrame([{c: getattr(b, c) for c in BAR_COLUMNS} for b in bars], columns=list(BAR_COLUMNS))
    frame.index = pd.to_datetime([b.time for b in bars], utc=True)
    frame.index.name = "time"
    return frame


class DataApi:
    """History, bars, contract details and search, what-if and daily P&L (see module docstring)."""

    def __init__(self, host: DataHost, emit_bar: Callable[[BarEvent], None]) -> None:
        self.host = host
        self._emit_bar = emit_bar
        #: topic -> the subscription's ack (exact topics: ``bars.1.TRADES.30`` is a prefix of ``...300``)
        self.bar_topics: dict[str, BarsAck] = {}

    async def _ask(self, body: Any, expect: type[Any], *, timeout_s: float | None = None) -> Any:
        reply = await self.host.gateway_client().call(validated(body), timeout_s=timeout_s)
        rtype = tag_of(type(body))
        if isinstance(reply, PacingRefused):
            raise PacingError(reply.reason, reply.retry_after_s, request_type=rtype)
        if isinstance(reply, Rejected):
            raise OrderRejected(reply.code, reply.reason, request_type=reply.request_type or rtype)
        if not isinstance(reply, expect):
            raise UnexpectedReply(f"{rtype}: unexpected reply {tag_of(type(reply))}")
        return reply

    # -- history ---------------------------------------------------------------------------------------------

    async def get_historical_bars(
        self,
        instrument: str | Instrument,
        end: datetime | str | None = None,
        duration: str = "1 D",
        bar_size: str = "5 mins",
        what_to_show: WhatToShow = "TRADES",
        use_rth: bool = True,
        *,
        as_dataframe: bool = False,
        timeout_s: float = HISTORY_TIMEOUT_S,
    ) -> Any:
        """IB's historical bars (a list of :class:`~bus.messages.Bar`, or a pandas DataFrame with
        ``as_dataframe=True``). ``end`` None is now. Raises :class:`PacingError` (ask again after its
        ``retry_after_s``), :class:`OrderRejected` (``history``: IB's refusal with its code, e.g. 162 TRADES on
        FX; the instrument's refusals)."""
        body = GetHistoricalBars(
            instrument=as_instrument(instrument),
            end=end_text(end),
            duration=duration,
            bar_size=bar_size,
            what_to_show=what_to_show,
            use_rth=use_rth,
        )
        reply: HistoricalBarsReply = await self._ask(body, HistoricalBarsReply, timeout_s=timeout_s)
        return bars_frame(reply.bars) if as_dataframe else list(reply.bars)

    # -- real-time bars ----------------------------------------------------------------------------------------

    async def subscribe_bars(
        self,
        instrument: str | Instrument,
        bar_size: str = "5 secs",
        what_to_show: RealTimeWhat = "TRADES",
        use_rth: bool = False,
    ) -> BarsAck:
        """Real-time bars of ``bar_size`` (a multiple of 5 seconds), built by the gateway from IB's 5-second bars:
        via ``on_bar`` / ``bars()``. The bus subscription is ready before the gateway is asked, so no bar is
        lost."""
        try:
            seconds = bar_seconds(bar_size)
        except ValueError as exc:
            raise OrderRejected("bad_request", str(exc), request_type=tag_of(SubscribeBars)) from None
        info = await self.host.qualify(instrument)
        topic = topics.bars(info.con_id, what_to_show, seconds, use_rth=use_rth)
        added = topic not in self.bar_topics
        if added:
            await self.host.add_topic(topic)
        body = SubscribeBars(
            instrument=info.instrument,
            bar_size=bar_size,
            what_to_show=what_to_show,
            use_rth=use_rth,
            subscriber=self.host.name,
        )
        try:
            ack: BarsAck = await self._ask(body, BarsAck)
        except BaseException:
            if added:
                self.host.drop_topic(topic)
            raise
        self.bar_topics[topic] = ack
        return ack

    async def unsubscribe_bars(
        self,
        instrument: str | Instrument | int,
        bar_size: str = "5 secs",
        what_to_show: RealTimeWhat = "TRADES",
        use_rth: bool = False,
    ) -> BarsAck:
        con_id = instrument if isinstance(instrument, int) else 0
        if not con_id:
            inst = as_instrument(instrument)  # type: ignore[arg-type]
            con_id = inst.con_id or next(
                (a.con_id for a in self.bar_topics.values() if a.symbol in (inst.display, inst.symbol)), 0
            )
        if not con_id:
            raise OrderRejected("not_found", f"no bars subscribed for {instrument!r}")
        body = UnsubscribeBars(
            con_id=con_id, bar_size=bar_size, what_to_show=what_to_show, use_rth=use_rth, subscriber=self.host.name
        )
        ack: BarsAck = await self._ask(body, BarsAck)
        if self.bar_topics.pop(ack.topic, None) is not None:
            self.host.drop_topic(ack.topic)
        return ack

    def on_event(self, topic: str, bar: BarEvent) -> None:
        """A bar from the bus (the client's reader): delivered when its exact topic is subscribed."""
        if topic in self.bar_topics:
            self._emit_bar(bar)

    def bar_matches(self, instrument: str | Instrument | int | None, bar: BarEvent) -> bool:
        if instrument is None:
            return True
        if isinstance(instrument, int):
            return bar.con_id == instrument
        inst = as_instrument(instrument)
        return bar.con_id == inst.con_id or bar.symbol in (inst.display, inst.symbol)

    # -- reference data ---------------------------------------------------------------------------------------

    async def get_contract_details(self, instrument: str | Instrument) -> list[ContractInfo]:
        """IB's details of every contract the instrument matches (all expiries of ``ES`` FUT CME)."""
        reply: ContractDetailsReply = await self._ask(
            GetContractDetails(instrument=as_instrument(instrument)), ContractDetailsReply
        )
        return list(reply.contracts)

    async def search_contracts(self, pattern: str) -> list[Instrument]:
        """IB's symbol search: instruments (``.symbol``, ``.sec_type``, ``.currency``, ``.exchange``, ``.con_id``)."""
        reply: ContractSearchReply = await self._ask(SearchContracts(pattern=pattern), ContractSearchReply)
        return list(reply.instruments)

    async def what_if(self, order: OrderSpec) -> WhatIfReply:
        """IB's preview of ``order`` (the same OrderSpec as ``place_order``): commission, initial and maintenance
        margin change, equity with loan after. Nothing is placed."""
        return await self._ask(WhatIfOrder(order=order), WhatIfReply)

    async def get_pnl(self) -> DailyPnlReply:
        """IB's daily P&L of the account and of each position (``.account``, ``.positions``)."""
        return await self._ask(GetDailyPnl(), DailyPnlReply)
