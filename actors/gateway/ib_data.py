"""IB's data requests (history, real-time bars, symbol search, what-if, market data type), over the session.

The library reports a failed request by ending it empty (``RaiseRequestErrors`` is off, as the rest of the gateway
expects); the reason (IB's code and text) only travels in its error event. :class:`IbData` therefore remembers the
errors of the requests it made, by request id (the router hands every error to :meth:`IbData.on_error` first), and
turns an empty answer with an error into :class:`IbDataError` with IB's own code. Like every other gateway module it
never imports the client library: it uses the session's ``IB`` object and the library module the session loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.ib import IbSession
from actors.gateway.pacing import Priority

#: Bound for one historical request (IB can take seconds for a long one).
HISTORY_TIMEOUT_S = 30.0
#: Bound for a what-if preview and a symbol search.
PREVIEW_TIMEOUT_S = 10.0
#: IB's "market data type" values (reqMarketDataType): live, frozen, delayed, delayed-frozen.
MARKET_DATA_LIVE = 1
MARKET_DATA_DELAYED = 3
#: IB's historical-data error code and the text of its pacing violation.
HISTORICAL_ERROR = 162
PACING_TEXT = "pacing violation"
#: Errors kept per request id at most (a request gets one or two).
MAX_ERRORS_PER_REQUEST = 4


class IbDataError(Exception):
    """IB refused a data request: its code and text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"IB {code}: {message}")
        self.code = code
        self.message = message


class IbData:
    """Data requests over one :class:`~actors.gateway.ib.IbSession` (see module docstring)."""

    def __init__(self, session: IbSession) -> None:
        self.session = session
        self._errors: dict[int, list[tuple[int, str]]] = {}
        self.pacing_violations = 0

    @property
    def _ib(self) -> Any:
        return self.session.ib

    def on_error(self, req_id: int, code: int, message: str) -> bool:
        """An error IB sent: True when it belongs to a data request of this class (kept for its caller)."""
        errors = self._errors.get(req_id)
        if errors is None:
            return False
        if code == HISTORICAL_ERROR and PACING_TEXT in message.lower():  # must never happen: the gateway paces
            self.pacing_violations += 1
            logger.error("gateway: IB historical pacing violation (reqId {}): {}", req_id, message)
        if len(errors) < MAX_ERRORS_PER_REQUEST:
            errors.append((code, message))
        return True

    def _failure(self, req_id: int) -> IbDataError | None:
        errors = self._errors.pop(req_id, [])
        return IbDataError(*errors[0]) if errors else None

    async def historical_bars(
        self,
        contract: lib.Contract,
        *,
        end: str,
        duration: str,
        bar_size: str,
        what_to_show: str,
        use_rth: bool,
        timeout: float = HISTORY_TIMEOUT_S,
    ) -> list[Any]:
        """IB's bars (``BarData``: date, open, high, low, close, volume, average, barCount); epoch dates
        (formatDate 2) so intraday bars come back as UTC datetimes. Raises :class:`IbDataError` (IB refused),
        TimeoutError, ConnectionError."""
        if not self.session.is_connected():
            raise ConnectionError("not connected to IB")
        ib = self._ib
        req_id = int(ib.client.getReqId())
        bars = self.session.lib.BarDataList()
        bars.reqId = req_id
        bars.contract = contract
        bars.endDateTime = end
        bars.durationStr = duration
        bars.barSizeSetting = bar_size
        bars.whatToShow = what_to_show
        bars.useRTH = use_rth
        bars.formatDate = 2
        bars.keepUpToDate = False
        bars.chartOptions = []
        self._errors[req_id] = []
        future = ib.wrapper.startReq(req_id, contract, container=bars)
        try:
            ib.client.reqHistoricalData(req_id, contract, end, duration, bar_size, what_to_show, use_rth, 2, False, [])
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                ib.client.cancelHistoricalData(req_id)
                raise
        finally:
            failure = self._failure(req_id)
        if failure is not None and not list(bars):
            raise failure
        return list(bars)

    def real_time_bars(self, contract: lib.Contract, what_to_show: str, use_rth: bool) -> Any:
        """Subscribe to IB's 5-second bars; the library's RealTimeBarList (its ``updateEvent`` fires per bar)."""
        return self._ib.reqRealTimeBars(contract, 5, what_to_show, use_rth)

    def cancel_real_time_bars(self, bars: Any) -> None:
        self._ib.cancelRealTimeBars(bars)

    async def matching_symbols(self, pattern: str, timeout: float = PREVIEW_TIMEOUT_S) -> list[Any]:
        """IB's ContractDescriptions for ``pattern`` (reqMatchingSymbols)."""
        if not self.session.is_connected():
            raise ConnectionError("not connected to IB")
        found = await asyncio.wait_for(self._ib.reqMatchingSymbolsAsync(pattern), timeout)
        return list(found or [])

    async def what_if(self, contract: lib.Contract, order: Any, timeout: float = PREVIEW_TIMEOUT_S) -> Any:
        """IB's whatIf OrderState for ``order`` (placed with whatIf: IB previews, never works it). Raises
        :class:`IbDataError` when IB refused the preview."""
        if not self.session.is_connected():
            raise ConnectionError("not connected to IB")
        ib = self._ib
        order.whatIf = True
        req_id = int(ib.client.getReqId())
        order.orderId = req_id
        self._errors[req_id] = []
        future = ib.wrapper.startReq(req_id, contract)
        try:
            with self.session.sender.as_priority(Priority.REQUEST):  # a preview waits behind real orders
                ib.client.placeOrder(req_id, contract, order)
            state = await asyncio.wait_for(future, timeout)
        finally:
            failure = self._failure(req_id)
        if failure is not None and not state:
            raise failure
        if not state:
            raise IbDataError(0, "IB sent no preview")
        return state

    def market_data_type(self, data_type: int) -> None:
        """reqMarketDataType: IB serves live data where the account has it, ``data_type`` elsewhere."""
        self._ib.reqMarketDataType(data_type)
