"""Market-data subscriptions of the simulated account (what IB calls
"market data permissions"), globally or per instrument.

================  =======================================  ===================================
state             reqMktData with type 1 (live)            reqMarketDataType(3) / 4 (delayed)
================  =======================================  ===================================
``realtime``      live ticks                               live ticks (IB serves live data
                                                           when the account has it)
``10089``         error 10089 (needs an API subscription,  delayed ticks (66-76) + notice 10167
                  delayed available); no data
``354``           error 354 (not subscribed, delayed       delayed ticks + notice 10167
                  available); no data
``10090``         error 10090 (part not subscribed); the   delayed ticks + notice 10167
                  subscription-independent ticks (open,
                  high, low, close, volume) keep coming
``none``          error 354 without the delayed note       error 10168 (delayed not enabled)
================  =======================================  ===================================

Without a real-time subscription reqHistoricalData and reqRealTimeBars get
162 "No market data permissions for <exchange> <secType>", as at IB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .instruments import Instrument
from .messages import TickType

STATES = ("realtime", "10089", "354", "10090", "none")
#: Ticks IB keeps sending with 10090 ("subscription-independent ticks").
INDEPENDENT_TICKS = frozenset({TickType.HIGH, TickType.LOW, TickType.CLOSE, TickType.OPEN,
                               TickType.VOLUME})


def _where(inst: Instrument) -> str:
    venue = inst.primary_exchange or inst.exchange
    return f"{inst.symbol} {venue}/TOP/ALL"


def refusal(state: str, inst: Instrument) -> tuple[int, str] | None:
    """IB's error for a live (type 1) request in ``state`` (None: served)."""
    where = _where(inst)
    if state == "10089":
        return 10089, ("Requested market data requires additional subscription for API. See link "
                       "in 'Market Data Connections' dialog for more details.Delayed market data "
                       f"is available.{where}")
    if state == "354":
        return 354, f"Requested market data is not subscribed.Delayed market data is available.{where}"
    if state == "10090":
        return 10090, ("Part of requested market data is not subscribed. Subscription-independent "
                       f"ticks are still active.Delayed market data is available.{where}")
    if state == "none":
        return 354, f"Requested market data is not subscribed.{where}"
    return None


DELAYED_NOTICE = (10167, "Requested market data is not subscribed. Displaying delayed market data.")
DELAYED_DISABLED = (10168, "Requested market data is not subscribed. Delayed market data is not enabled.")


def history_refusal(inst: Instrument) -> str:
    venue = inst.primary_exchange or inst.exchange
    return f"No market data permissions for {venue} {inst.sec_type}"


@dataclass
class Entitlements:
    """The account's market-data state: a default and per-conId overrides."""

    default: str = "realtime"
    overrides: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_state(self.default)

    def state(self, inst: Instrument) -> str:
        return self.overrides.get(inst.con_id, self.default)

    def live(self, inst: Instrument) -> bool:
        return self.state(inst) == "realtime"

    def set(self, state: str, con_ids: list[int] | None = None) -> None:
        check_state(state)
        if con_ids is None:
            self.default = state
            self.overrides.clear()
        else:
            for c in con_ids:
                self.overrides[c] = state

    def snapshot(self) -> dict:
        return {"default": self.default,
                "overrides": {str(k): v for k, v in sorted(self.overrides.items())}}


def check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"market data state must be one of {STATES}, not {state!r}")
