"""IB's historical-data pacing rules, kept by the gateway so that IB never has to enforce them.

IB answers error 162 "Historical data request pacing violation" when one login

* repeats an identical historical request within 15 seconds,
* makes six or more requests for the same contract, exchange and whatToShow within two seconds, or
* makes more than 60 historical requests within ten minutes

(a BID_ASK request counts twice: IB asks its farms for both sides). :class:`HistoryPacing` records every request
the gateway sends and says when the next one may go. Each window is widened by a margin: IB counts a request when
*it* processes it, and the gateway's request may wait a moment in the outbound message budget
(:mod:`.pacing`) behind others, so two requests recorded 2.1 s apart could reach IB closer together.

Pure and clock-agnostic (every method takes ``now``), so it is unit-tested on its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: IB's rules (see the module docstring).
IDENTICAL_WINDOW_S = 15.0
SAME_CONTRACT_WINDOW_S = 2.0
SAME_CONTRACT_MAX = 5
TOTAL_WINDOW_S = 600.0
TOTAL_MAX = 60
#: Added to every window: the request may wait in the outbound budget and IB counts on its own clock.
WINDOW_MARGIN_S = 1.0


@dataclass(frozen=True, slots=True)
class HistoryKey:
    """One historical request: every parameter (the identical-request rule) and the contract/whatToShow pair (the
    same-contract rule)."""

    con_id: int
    exchange: str
    end: str
    duration: str
    bar_size: str
    what_to_show: str
    use_rth: bool

    @property
    def contract_key(self) -> tuple[int, str, str]:
        return (self.con_id, self.exchange, self.what_to_show)

    @property
    def weight(self) -> int:
        return 2 if self.what_to_show == "BID_ASK" else 1


class HistoryPacing:
    """The requests sent to IB in the last ten minutes, and when the next one may go."""

    def __init__(self, *, margin_s: float = WINDOW_MARGIN_S) -> None:
        self.margin_s = margin_s
        self._identical: dict[HistoryKey, float] = {}
        self._by_contract: dict[tuple[int, str, str], deque[float]] = {}
        self._all: deque[float] = deque()

    def _expire(self, now: float) -> None:
        total = TOTAL_WINDOW_S + self.margin_s
        while self._all and now - self._all[0] > total:
            self._all.popleft()
        same = SAME_CONTRACT_WINDOW_S + self.margin_s
        for key in [k for k, q in self._by_contract.items() if not q or now - q[-1] > same]:
            del self._by_contract[key]
        for q in self._by_contract.values():
            while q and now - q[0] > same:
                q.popleft()
        ident = IDENTICAL_WINDOW_S + self.margin_s
        for stale in [k for k, t in self._identical.items() if now - t > ident]:
            del self._identical[stale]

    def in_window(self, now: float) -> int:
        """Requests (weighted) counted against the ten-minute budget now."""
        self._expire(now)
        return len(self._all)

    def next_allowed(self, key: HistoryKey, now: float, *, ahead: int = 0) -> float:
        """Earliest time ``key`` may be sent (``now`` if now), with ``ahead`` other requests (weighted) to be sent
        before it in the ten-minute budget."""
        self._expire(now)
        at = now
        last = self._identical.get(key)
        if last is not None:
            at = max(at, last + IDENTICAL_WINDOW_S + self.margin_s)
        recent = self._by_contract.get(key.contract_key)
        if recent is not None and len(recent) + key.weight > SAME_CONTRACT_MAX:
            # the oldest requests that must leave the window before this one fits
            idx = len(recent) + key.weight - SAME_CONTRACT_MAX - 1
            at = max(at, recent[idx] + SAME_CONTRACT_WINDOW_S + self.margin_s)
        need = len(self._all) + ahead + key.weight - TOTAL_MAX
        if need > 0:
            if need > len(self._all):  # more waiting than the window holds: at least one full window away
                return max(at, now + TOTAL_WINDOW_S + self.margin_s)
            at = max(at, self._all[need - 1] + TOTAL_WINDOW_S + self.margin_s)
        return at

    def record(self, key: HistoryKey, now: float) -> None:
        """``key`` was sent to IB at ``now``."""
        self._expire(now)
        self._identical[key] = now
        recent = self._by_contract.setdefault(key.contract_key, deque())
        for _ in range(key.weight):
            recent.append(now)
            self._all.append(now)
