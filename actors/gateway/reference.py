"""Reference data for strategies: IB's contract details, symbol search, an order's what-if preview, daily P&L.

* ``GetContractDetails``: every contract the instrument matches (reqContractDetails; all expiries of ``ES``), each a
  :class:`~bus.messages.ContractInfo` with the market rule's increments;
* ``SearchContracts``: reqMatchingSymbols; instruments with IB's conId (types Khazad does not trade are left out);
* ``WhatIfOrder``: the order placed with ``whatIf`` (IB previews it and works nothing): commission, margin before,
  change and after, equity with loan. It travels in the order class of the outbound budget, like any placeOrder;
* ``GetDailyPnl``: the last values of IB's daily P&L feed (:mod:`.pnl`), no IB request.
"""

from __future__ import annotations

import typing
from typing import Any

from loguru import logger

from actors.gateway.connection import ConnectionTracker
from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.convert import error_text
from actors.gateway.ib import num
from actors.gateway.ib_data import IbData, IbDataError
from actors.gateway.pnl import PnLFeed
from bus.contracts import rounded_order
from bus.messages import (
    MAX_CONTRACTS,
    ContractDetailsReply,
    ContractSearchReply,
    DailyPnlReply,
    GetContractDetails,
    Instrument,
    Rejected,
    SearchContracts,
    SecType,
    WhatIfOrder,
    WhatIfReply,
    tag_of,
)

#: The security types an Instrument can name (the search leaves the others out).
TRADABLE_TYPES = frozenset(typing.get_args(SecType))


def _value(state: Any, name: str) -> float | None:
    """A whatIf OrderState field (IB sends numbers as text; "" and UNSET_DOUBLE mean none)."""
    raw = getattr(state, name, None)
    try:
        return num(float(raw)) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def what_if_reply(state: Any) -> WhatIfReply:
    return WhatIfReply(
        commission=_value(state, "commission"),
        min_commission=_value(state, "minCommission"),
        max_commission=_value(state, "maxCommission"),
        commission_currency=str(getattr(state, "commissionCurrency", "") or "")[:64],
        init_margin_before=_value(state, "initMarginBefore"),
        init_margin_change=_value(state, "initMarginChange"),
        init_margin_after=_value(state, "initMarginAfter"),
        maint_margin_before=_value(state, "maintMarginBefore"),
        maint_margin_change=_value(state, "maintMarginChange"),
        maint_margin_after=_value(state, "maintMarginAfter"),
        equity_with_loan_before=_value(state, "equityWithLoanBefore"),
        equity_with_loan_change=_value(state, "equityWithLoanChange"),
        equity_with_loan_after=_value(state, "equityWithLoanAfter"),
        warning=str(getattr(state, "warningText", "") or "")[:2000],
    )


def search_instrument(description: Any) -> Instrument | None:
    """One reqMatchingSymbols result as an Instrument (None for a type Khazad does not trade)."""
    c = description.contract
    if c is None or c.secType not in TRADABLE_TYPES or not c.conId:
        return None
    exchange = "SMART" if c.secType in ("STK", "OPT") else (c.primaryExchange or c.exchange or "SMART")
    try:
        return Instrument(
            symbol=c.symbol,
            sec_type=c.secType,
            exchange=exchange[:16],
            currency=c.currency or "USD",
            con_id=int(c.conId),
        )
    except (ValueError, TypeError):  # a symbol outside the bus's pattern: not one a strategy could trade
        return None


class ReferenceData:
    """Contract details, search, what-if and daily P&L requests (see module docstring)."""

    def __init__(self, data: IbData, contracts: ContractCache, conn: ConnectionTracker, pnl: PnLFeed) -> None:
        self.data = data
        self.contracts = contracts
        self.conn = conn
        self.pnl = pnl

    async def details(self, req: GetContractDetails) -> ContractDetailsReply | Rejected:
        rtype = tag_of(GetContractDetails)
        try:
            found = await self.contracts.all_details(req.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(code="disconnected", reason=f"IB did not answer: {error_text(exc)}", request_type=rtype)
        if not found:
            return Rejected(
                code="unknown_symbol",
                reason=f"IB has no contract for {req.instrument.display} (IB 200)",
                request_type=rtype,
            )
        return ContractDetailsReply(contracts=found[:MAX_CONTRACTS])

    async def search(self, req: SearchContracts) -> ContractSearchReply | Rejected:
        try:
            found = await self.data.matching_symbols(req.pattern)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected",
                reason=f"IB did not answer: {error_text(exc)}",
                request_type=tag_of(SearchContracts),
            )
        instruments = [i for d in found if (i := search_instrument(d)) is not None]
        return ContractSearchReply(instruments=instruments[:MAX_CONTRACTS])

    async def what_if(self, req: WhatIfOrder) -> WhatIfReply | Rejected:
        rtype = tag_of(WhatIfOrder)
        spec = req.order
        try:
            found = await self.contracts.resolve(spec.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"cannot qualify {spec.instrument.display}: {exc}", request_type=rtype
            )
        if not isinstance(found, Qualified):
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        limit, stop = rounded_order(spec, found.info)
        order = self.data.session.make_order(spec, self.conn.account, limit=limit, stop=stop)
        try:
            state = await self.data.what_if(found.contract, order)
        except IbDataError as exc:
            return Rejected(code="what_if", reason=str(exc)[:500], request_type=rtype)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(code="disconnected", reason=f"IB did not answer: {error_text(exc)}", request_type=rtype)
        reply = what_if_reply(state)
        logger.info(
            "gateway: what-if {} {} {:g} {}: commission {}, init margin change {}, equity with loan after {}",
            spec.order_ref,
            spec.side,
            spec.quantity,
            found.info.display,
            reply.commission,
            reply.init_margin_change,
            reply.equity_with_loan_after,
        )
        return reply

    def daily_pnl(self) -> DailyPnlReply:
        return DailyPnlReply(account=self.pnl.account, positions=list(self.pnl.positions.values()))
