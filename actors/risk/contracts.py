"""The governor's copy of IB's contract details: what the gateway qualified, by conId, and which conId each
instrument a strategy sent stands for.

Fed by the gateway's answers (``MarketDataAck.info``), its ``instrument.<conId>`` events and the contracts of each
snapshot. An instrument the gateway refused is remembered with the gateway's code and reason for
:data:`REFUSAL_MEMORY_S` (``unknown_symbol``, ``ambiguous_contract``, ``contract_mismatch``), so a strategy sending
it again is answered at once; a refusal for lack of an answer (``disconnected``, no reply) is not remembered.
No order is approved on an instrument without IB's details (fail closed: ``risk.not_qualified``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.messages import ContractInfo, Instrument

#: how long a refusal of the gateway (no such contract, ambiguous, mismatch) is answered from memory
REFUSAL_MEMORY_S = 5.0
#: gateway codes that say something about the instrument itself (remembered)
LASTING_REFUSALS = frozenset({"unknown_symbol", "ambiguous_contract", "contract_mismatch"})


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    reason: str
    at_mono: float

    @property
    def lasting(self) -> bool:
        return self.code in LASTING_REFUSALS


class ContractBook:
    """conId -> IB's details; instrument -> conId; instrument -> the gateway's last refusal."""

    def __init__(self) -> None:
        self.infos: dict[int, ContractInfo] = {}
        self._con_of: dict[Instrument, int] = {}
        self._refused: dict[Instrument, Refusal] = {}

    def learn(self, info: ContractInfo, instrument: Instrument | None = None) -> None:
        self.infos[info.con_id] = info
        self._con_of[info.instrument] = info.con_id
        if instrument is not None:
            self._con_of[instrument] = info.con_id
            self._refused.pop(instrument, None)

    def info(self, con_id: int) -> ContractInfo | None:
        return self.infos.get(con_id)

    def con_id_of(self, instrument: Instrument) -> int | None:
        return self._con_of.get(instrument)

    def refuse(self, instrument: Instrument, code: str, reason: str, now: float) -> None:
        self._refused[instrument] = Refusal(code, reason, now)

    def refusal(self, instrument: Instrument, now: float) -> Refusal | None:
        """The gateway's last refusal of the instrument while it is remembered (lasting ones only)."""
        r = self._refused.get(instrument)
        if r is None or not r.lasting or now - r.at_mono > REFUSAL_MEMORY_S:
            return None
        return r

    def last_refusal(self, instrument: Instrument) -> Refusal | None:
        """The last refusal whatever its age (for the reason of a check that found no details)."""
        return self._refused.get(instrument)
