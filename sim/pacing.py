"""IB's historical-data pacing rules, on the simulator's clock.

IB answers error 162 "Historical Market Data Service error message:
Historical data request pacing violation" when a client

* repeats an identical historical request within 15 seconds,
* makes six or more requests for the same contract, exchange and tick type
  (whatToShow) within two seconds, or
* makes more than 60 historical requests within ten minutes.

A BID_ASK request counts twice (IB asks its farms for BID and ASK).  The
rules apply to the whole gateway (one IB login), whichever client asks.
IB itself enforces them as errors for bars of 30 seconds or less and paces
larger bars more softly; mode ``all`` (the default) applies them to every
bar size so code that passes here never trips IB, ``small`` applies them
only to bars of 30 seconds or less like IB, ``off`` disables them.
Requests refused for pacing do not count against the limits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

PACING_MODES = ("all", "small", "off")
IDENTICAL_WINDOW = 15.0
SAME_CONTRACT_WINDOW = 2.0
SAME_CONTRACT_MAX = 5          # the sixth within the window is a violation
TOTAL_WINDOW = 600.0
TOTAL_MAX = 60                 # the 61st within ten minutes is a violation
SMALL_BAR_SECONDS = 30
PACING_MESSAGE = "Historical Market Data Service error message:Historical data request pacing violation"


@dataclass
class HistoricalPacing:
    """Counts historical requests on sim time; ``check`` refuses violations."""

    mode: str = "all"
    _identical: dict[tuple, float] = field(default_factory=dict)
    _by_contract: dict[tuple, deque] = field(default_factory=dict)
    _all: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.mode not in PACING_MODES:
            raise ValueError(f"history pacing must be one of {PACING_MODES}, not {self.mode!r}")

    def set_mode(self, mode: str) -> None:
        if mode not in PACING_MODES:
            raise ValueError(f"history pacing must be one of {PACING_MODES}, not {mode!r}")
        self.mode = mode

    def reset(self) -> None:
        self._identical.clear()
        self._by_contract.clear()
        self._all.clear()

    def check(self, now: float, identical: tuple, contract: tuple, bar_seconds: int,
              weight: int = 1) -> str | None:
        """Record a request; IB's pacing-violation text if it breaks a rule.

        ``identical``: every parameter of the request; ``contract``: (conId,
        exchange, whatToShow); ``weight``: 2 for BID_ASK.
        """
        if self.mode == "off" or (self.mode == "small" and bar_seconds > SMALL_BAR_SECONDS):
            return None
        self._expire(now)
        last = self._identical.get(identical)
        if last is not None and now - last < IDENTICAL_WINDOW:
            return PACING_MESSAGE
        recent = self._by_contract.setdefault(contract, deque())
        if len(recent) + weight > SAME_CONTRACT_MAX:
            return PACING_MESSAGE
        if len(self._all) + weight > TOTAL_MAX:
            return PACING_MESSAGE
        self._identical[identical] = now
        for _ in range(weight):
            recent.append(now)
            self._all.append(now)
        return None

    def _expire(self, now: float) -> None:
        while self._all and now - self._all[0] >= TOTAL_WINDOW:
            self._all.popleft()
        for key in [k for k, t in self._identical.items() if now - t >= IDENTICAL_WINDOW]:
            del self._identical[key]
        for key, q in list(self._by_contract.items()):
            while q and now - q[0] >= SAME_CONTRACT_WINDOW:
                q.popleft()
            if not q:
                del self._by_contract[key]

    def snapshot(self) -> dict:
        return {"mode": self.mode, "in_last_10_minutes": len(self._all)}
