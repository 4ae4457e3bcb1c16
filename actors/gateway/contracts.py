"""Contracts qualified by IB (with their conId), cached per instrument: an order or a stream asks IB once."""

from __future__ import annotations

from actors.gateway import libtypes as lib
from actors.gateway.ib import IB_REQUEST_TIMEOUT_S, IbSession
from bus.messages import Instrument


class ContractCache:
    """Instrument -> IB's contract; an unknown instrument (IB 200) is not cached, so it is asked again."""

    def __init__(self, session: IbSession, *, timeout_s: float = IB_REQUEST_TIMEOUT_S) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self._contracts: dict[Instrument, lib.Contract] = {}

    async def get(self, inst: Instrument) -> lib.Contract | None:
        """The qualified contract, or None when IB has no definition. Raises TimeoutError/ConnectionError."""
        contract = self._contracts.get(inst)
        if contract is None:
            contract = await self.session.qualify(self.session.make_contract(inst), self.timeout_s)
            if contract is not None:
                self._contracts[inst] = contract
        return contract
