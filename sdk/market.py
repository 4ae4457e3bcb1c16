"""Market data subscriptions of a strategy client, by IB contract (conId).

A strategy names an instrument the way it likes (``"AAPL"``, ``Instrument.future("ES", "202703")``); the gateway
qualifies it (:class:`~bus.messages.QualifyInstrument`) and the client then listens on that contract's topic
(``md.<conId>``), so two expiries of one symbol are two streams that never mix. :class:`MarketSubscriptions`
remembers which conId each name stands for; :class:`LastTicks` (``client.last_ticks``) is the last tick per
contract, looked up by any of those names: the conId, the name it was subscribed with, or its readable name
(``ESH7``, ``EUR.CHF``, ``AAPL 20250620 190 C``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from bus.messages import ContractInfo, Instrument, TickEvent


class MarketSubscriptions:
    """Subscribed contracts, the names they were subscribed with, and their last ticks."""

    def __init__(self) -> None:
        self.contracts: dict[int, ContractInfo] = {}
        self.names: dict[Hashable, int] = {}
        self.ticks: dict[int, TickEvent] = {}

    def add(self, key: str | Instrument, info: ContractInfo) -> None:
        self.contracts[info.con_id] = info
        self.names[key] = info.con_id

    def remove(self, con_id: int) -> None:
        self.contracts.pop(con_id, None)
        self.ticks.pop(con_id, None)
        for name in [n for n, c in self.names.items() if c == con_id]:
            del self.names[name]

    def resolve(self, key: Any) -> int | None:
        """The conId a name stands for: a conId, a subscribed name or instrument, or a readable name."""
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            return key
        if isinstance(key, ContractInfo):
            return key.con_id
        con_id = self.names.get(key) if isinstance(key, Hashable) else None
        if con_id is not None:
            return con_id
        if isinstance(key, Instrument):
            return key.con_id or None
        if isinstance(key, str):
            wanted = key.upper()
            found = [
                c
                for c, info in self.contracts.items()
                if wanted in (info.display.upper(), info.instrument.local_symbol.upper())
            ]
            return found[0] if len(found) == 1 else None
        return None

    def wants(self, con_id: int) -> bool:
        return con_id in self.contracts

    def matches(self, key: Any, tick: TickEvent) -> bool:
        """Is ``tick`` of the contract ``key`` names? (resolved when the tick arrives: a stream may be created
        before its subscription)."""
        con_id = self.resolve(key)
        if con_id is not None:
            return tick.con_id == con_id
        return isinstance(key, str) and tick.symbol.upper() == key.upper()


class LastTicks(Mapping[Any, TickEvent]):
    """The last tick of each subscribed contract: ``last_ticks["AAPL"]``, ``last_ticks[265598]``,
    ``last_ticks[Instrument.future("ES", "202703")]``, ``last_ticks.get("ESH7")``. Iterating gives conIds."""

    def __init__(self, subs: MarketSubscriptions) -> None:
        self._subs = subs

    def __getitem__(self, key: Any) -> TickEvent:
        con_id = self._subs.resolve(key)
        if con_id is None or con_id not in self._subs.ticks:
            raise KeyError(key)
        return self._subs.ticks[con_id]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._subs.ticks))

    def __len__(self) -> int:
        return len(self._subs.ticks)

    def snapshot(self) -> LastTicks:
        """A copy that later ticks do not change (for another thread)."""
        copy = MarketSubscriptions()
        copy.contracts = dict(self._subs.contracts)
        copy.names = dict(self._subs.names)
        copy.ticks = dict(self._subs.ticks)
        return LastTicks(copy)
