"""Parsers for the client requests the simulator understands.

Field positions follow the text protocol at server version 176 as written
by ib_insync, ib_async and ibapi (their ``client.py``).  Each parser takes a
``FieldReader`` positioned after the message id and returns a small frozen
record; malformed input raises ``ProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import FieldReader

#: reqContractDetails carries issuerId from this version.
BOND_ISSUERID = 176


@dataclass(frozen=True)
class ContractSpec:
    """The 12 contract fields every request carries (what the client asked)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    sec_id_type: str = ""
    sec_id: str = ""

    def describe(self) -> str:
        parts = [self.sec_type or "?", self.symbol or self.local_symbol or str(self.con_id)]
        if self.last_trade_date:
            parts.append(self.last_trade_date)
        if self.exchange:
            parts.append(self.exchange)
        if self.currency:
            parts.append(self.currency)
        return " ".join(parts)


def read_contract(r: FieldReader) -> ContractSpec:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier,
    exchange, primaryExchange, currency, localSymbol, tradingClass."""
    return ContractSpec(
        con_id=r.int(),
        symbol=r.str(),
        sec_type=r.str().upper(),
        last_trade_date=r.str(),
        strike=r.float(0.0) or 0.0,
        right=r.str(),
        multiplier=r.str(),
        exchange=r.str(),
        primary_exchange=r.str(),
        currency=r.str(),
        local_symbol=r.str(),
        trading_class=r.str(),
    )


def with_sec_id(c: ContractSpec, sec_id_type: str, sec_id: str) -> ContractSpec:
    if not sec_id_type and not sec_id:
        return c
    return ContractSpec(**{**c.__dict__, "sec_id_type": sec_id_type, "sec_id": sec_id})


@dataclass(frozen=True)
class ExecFilter:
    """reqExecutions filter; empty/zero fields match everything."""

    client_id: int = 0
    account: str = ""
    time: str = ""
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    side: str = ""


def read_exec_filter(r: FieldReader) -> tuple[int, ExecFilter]:
    r.skip(1)  # version
    req_id = r.int()
    f = ExecFilter(
        client_id=r.int(), account=r.str(), time=r.str(), symbol=r.str(),
        sec_type=r.str().upper(), exchange=r.str(), side=r.str().upper())
    return req_id, f


@dataclass(frozen=True)
class MktDataRequest:
    """reqMktData."""

    req_id: int
    contract: ContractSpec
    generic_ticks: str
    snapshot: bool
    regulatory_snapshot: bool


def read_mkt_data(r: FieldReader) -> MktDataRequest:
    r.skip(1)  # version
    req_id = r.int()
    contract = read_contract(r)
    if contract.sec_type == "BAG":
        legs = r.int()
        r.skip(4 * legs)
    if r.bool():  # deltaNeutralContract
        r.skip(3)
    generic = r.str()
    snapshot = r.bool()
    regulatory = r.bool()
    return MktDataRequest(req_id, contract, generic, snapshot, regulatory)


def read_contract_details(r: FieldReader, version: int) -> tuple[int, ContractSpec, bool]:
    r.skip(1)  # version
    req_id = r.int()
    contract = read_contract(r)
    include_expired = r.bool()
    contract = with_sec_id(contract, r.str(), r.str())
    if version >= BOND_ISSUERID:
        r.opt_str()  # issuerId
    return req_id, contract, include_expired


@dataclass(frozen=True)
class HistoricalRequest:
    """reqHistoricalData."""

    req_id: int
    contract: ContractSpec
    end_date_time: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool


def read_historical_data(r: FieldReader) -> HistoricalRequest:
    req_id = r.int()
    contract = read_contract(r)
    r.skip(1)  # includeExpired
    end = r.str()
    bar_size = r.str()
    duration = r.str()
    use_rth = r.bool()
    what = r.str().upper()
    format_date = r.int(1)
    if contract.sec_type == "BAG":
        legs = r.int()
        r.skip(4 * legs)
    keep = r.bool() if r.remaining() else False
    return HistoricalRequest(req_id, contract, end, bar_size, duration,
                             use_rth, what, format_date, keep)
