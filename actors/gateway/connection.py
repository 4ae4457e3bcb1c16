"""The state of the gateway's link to IB, as an explicit transition table, and the reconnect backoff.

::

    DISCONNECTED -> CONNECTING -> CONNECTED -> RECONCILING -> READY
         ^               |            |             |           |
         +---------------+------------+-------------+-----------+   (socket closed, or IB's 1100)
    DISCONNECTED -> RECONCILING     (IB's 1101/1102: TWS got its servers back, the socket never closed)
    READY -> RECONCILING            (1101/1102 while READY)
    any -> STOPPED                  (shutdown, or a fatal account mismatch)

Orders are accepted only in READY. Cancels are sent whenever the socket is up.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Final

from bus.messages import ConnectionStateName

DISCONNECTED: Final = "DISCONNECTED"
CONNECTING: Final = "CONNECTING"
CONNECTED: Final = "CONNECTED"
RECONCILING: Final = "RECONCILING"
READY: Final = "READY"
STOPPED: Final = "STOPPED"

TRANSITIONS: dict[ConnectionStateName, frozenset[ConnectionStateName]] = {
    DISCONNECTED: frozenset({CONNECTING, RECONCILING, STOPPED}),
    CONNECTING: frozenset({CONNECTED, DISCONNECTED, STOPPED}),
    CONNECTED: frozenset({RECONCILING, DISCONNECTED, STOPPED}),
    RECONCILING: frozenset({READY, DISCONNECTED, STOPPED}),
    READY: frozenset({RECONCILING, DISCONNECTED, STOPPED}),
    STOPPED: frozenset(),
}

#: IB system codes about the link between TWS/IB Gateway and IB's servers (reqId -1).
CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
CLIENT_ID_IN_USE = 326
#: Farm status notices: published on ``state.connection`` with the current state, no transition.
FARM_CODES = frozenset({2103, 2104, 2105, 2106, 2107, 2108, 2110, 2157, 2158})
SYSTEM_CODES = (
    frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT, CLIENT_ID_IN_USE, 502, 504, 1300})
    | FARM_CODES
)
#: Jitter: the delay is drawn from [JITTER_LOW, 1] x the exponential backoff (spreads reconnect storms).
JITTER_LOW = 0.5


class IllegalTransition(RuntimeError):
    pass


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: ``uniform(JITTER_LOW, 1) * min(max, initial * 2**attempt)``."""
    base = min(max_s, initial_s * (2 ** min(attempt, 30)))
    r = (rng or random).uniform(JITTER_LOW, 1.0)
    return base * r


@dataclass
class ConnectionTracker:
    """Current connection state, last IB code and counters, and the account this connection trades (the
    configured one, confirmed or filled in from the server's managed accounts once connected)."""

    state: ConnectionStateName = DISCONNECTED
    account: str = ""
    accounts: list[str] = field(default_factory=list)
    ib_code: int | None = None
    message: str = ""
    reconnects: int = 0
    connects: int = 0
    since_mono: float = field(default_factory=time.monotonic)
    history: list[ConnectionStateName] = field(default_factory=list)

    def can(self, new: ConnectionStateName) -> bool:
        return new in TRANSITIONS[self.state]

    def move(self, new: ConnectionStateName, *, ib_code: int | None = None, message: str = "") -> bool:
        """Transition (False when already there: the caller may still publish the new code/message)."""
        if new == self.state:
            if ib_code is not None:
                self.ib_code = ib_code
            self.message = message or self.message
            return False
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"connection: illegal transition {self.state} -> {new}")
        self.state = new
        self.ib_code = ib_code
        self.message = message
        self.since_mono = time.monotonic()
        self.history.append(new)
        del self.history[:-50]
        return True

    @property
    def ready(self) -> bool:
        return self.state == READY
