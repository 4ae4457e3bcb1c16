"""Fault-injection state: what the next orders/connections will suffer.

The control API sets these; the broker and server consult them.  Every
random choice (e.g. "a fraction of orders stay PreSubmitted") draws from a
generator seeded from the simulator seed, so a scenario replays exactly.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass

DEFAULT_REJECT_CODE = 201
DEFAULT_REJECT_REASON = "Simulated rejection (Khazad sim fault injection)"


@dataclass(frozen=True)
class Rejection:
    """One queued order rejection."""

    code: int
    message: str
    reject_json: str


class Faults:
    """Fault switches (see the control commands of the same names)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Everything back to healthy (used by the ``reset`` command)."""
        self._rng = random.Random(f"{self.seed}:faults")
        self.clear_order_faults()
        self.refusing = False
        self.connectivity_lost = False

    def clear_order_faults(self) -> None:
        """Forget pending rejections, delays, dropped acks and sticky orders."""
        self.rejections: deque[Rejection] = deque()
        self.amend_rejections: deque[Rejection] = deque()
        self.ack_delay = 0.0
        self.drop_acks = 0
        self.sticky_count = 0
        self.sticky_fraction = 0.0

    # -- order faults ----------------------------------------------------------

    def add_rejections(self, n: int, code: int = DEFAULT_REJECT_CODE,
                       reason: str | dict | None = None) -> None:
        if isinstance(reason, dict):
            reject_json = json.dumps(reason, sort_keys=True)
            text = str(reason.get("reason") or reason.get("text") or DEFAULT_REJECT_REASON)
        else:
            text = reason or DEFAULT_REJECT_REASON
            reject_json = json.dumps({"reason": text, "source": "khazad-sim"}, sort_keys=True)
        message = f"Order rejected - reason:{text}"
        for _ in range(n):
            self.rejections.append(Rejection(code, message, reject_json))

    def take_rejection(self) -> Rejection | None:
        return self.rejections.popleft() if self.rejections else None

    def add_amend_rejections(self, n: int, code: int, message: str) -> None:
        """Refuse the next ``n`` amendments of working orders with IB's ``code`` and ``message`` (the order keeps
        its terms), as IB does for reasons the simulator does not model (a tick rule changed since the client
        read the contract's details, a venue's own limits)."""
        for _ in range(n):  # IB's advancedOrderRejectJson comes with 201 only
            self.amend_rejections.append(Rejection(code, message, ""))

    def take_amend_rejection(self) -> Rejection | None:
        return self.amend_rejections.popleft() if self.amend_rejections else None

    def take_drop_ack(self) -> bool:
        if self.drop_acks > 0:
            self.drop_acks -= 1
            return True
        return False

    def take_sticky(self) -> bool:
        if self.sticky_count > 0:
            self.sticky_count -= 1
            return True
        if self.sticky_fraction > 0:
            return self._rng.random() < self.sticky_fraction
        return False

    def snapshot(self) -> dict:
        return {
            "pending_rejections": len(self.rejections),
            "ack_delay": self.ack_delay,
            "drop_acks": self.drop_acks,
            "sticky_presubmitted": self.sticky_count,
            "sticky_fraction": self.sticky_fraction,
            "refusing_connections": self.refusing,
            "connectivity_lost": self.connectivity_lost,
        }
