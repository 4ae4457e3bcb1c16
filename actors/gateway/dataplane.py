"""The gateway's data plane for strategies (issue 17): the one place that asks IB for data.

Built by the actor from its collaborators, it answers the data requests (``request_handlers``: history, real-time
bars, contract details and search, what-if, daily P&L) and takes IB's errors about its requests first
(:meth:`DataPlane.on_error`). Each concern is its own module: :mod:`.history` (cache, pacing, fair queue),
:mod:`.bars` (real-time bars), :mod:`.reference` (details, search, what-if, P&L), :mod:`.ib_data` (the requests
over the session); ticks and the delayed-data fallback stay in :mod:`.marketdata`.
"""

from __future__ import annotations

from collections.abc import Mapping

from actors.gateway.bars import BarFeed
from actors.gateway.connection import ConnectionTracker
from actors.gateway.contracts import ContractCache
from actors.gateway.history import HistoryService
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.outbox import Outbox
from actors.gateway.pnl import PnLFeed
from actors.gateway.reference import ReferenceData
from bus.actor import Handler
from bus.messages import (
    BarsAck,
    ContractDetailsReply,
    ContractSearchReply,
    DailyPnlReply,
    GetContractDetails,
    GetDailyPnl,
    GetHistoricalBars,
    HistoricalBarsReply,
    PacingRefused,
    Rejected,
    SearchContracts,
    SubscribeBars,
    UnsubscribeBars,
    WhatIfOrder,
    WhatIfReply,
)
from bus.reqrep import CallContext


class DataPlane:
    """History, bars and reference data over the gateway's one IB session (see module docstring)."""

    def __init__(
        self,
        market_data: MarketDataFeed,
        contracts: ContractCache,
        conn: ConnectionTracker,
        pnl: PnLFeed,
        outbox: Outbox,
    ) -> None:
        self.market_data = market_data
        self.data = market_data.data
        self.history = HistoryService(self.data, contracts)
        self.bars = BarFeed(self.data, contracts, outbox)
        self.reference = ReferenceData(self.data, contracts, conn, pnl)
        market_data.followers.append(self.bars)

    def request_handlers(self) -> Mapping[type, Handler]:
        return {
            GetHistoricalBars: self._history,
            SubscribeBars: self._subscribe_bars,
            UnsubscribeBars: self._unsubscribe_bars,
            GetContractDetails: self._details,
            SearchContracts: self._search,
            WhatIfOrder: self._what_if,
            GetDailyPnl: self._pnl,
        }

    def on_error(self, req_id: int, code: int, message: str) -> bool:
        """IB's error for one of the data plane's requests or streams: True when it was one (handled here)."""
        return self.data.on_error(req_id, code, message) or self.market_data.on_error(req_id, code, message)

    def stop(self) -> None:
        self.history.stop()

    async def _history(
        self, ctx: CallContext, req: GetHistoricalBars
    ) -> HistoricalBarsReply | PacingRefused | Rejected:
        # the fair queue's key: the authenticated key when the bus has one, else the sender's name
        return await self.history.get(req, ctx.user_id or ctx.sender)

    async def _subscribe_bars(self, ctx: CallContext, req: SubscribeBars) -> BarsAck | Rejected:
        return await self.bars.subscribe(req)

    async def _unsubscribe_bars(self, ctx: CallContext, req: UnsubscribeBars) -> BarsAck | Rejected:
        return self.bars.unsubscribe(req)

    async def _details(self, ctx: CallContext, req: GetContractDetails) -> ContractDetailsReply | Rejected:
        return await self.reference.details(req)

    async def _search(self, ctx: CallContext, req: SearchContracts) -> ContractSearchReply | Rejected:
        return await self.reference.search(req)

    async def _what_if(self, ctx: CallContext, req: WhatIfOrder) -> WhatIfReply | Rejected:
        return await self.reference.what_if(req)

    async def _pnl(self, ctx: CallContext, req: GetDailyPnl) -> DailyPnlReply:
        return self.reference.daily_pnl()
