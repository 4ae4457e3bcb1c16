"""The simulator's connection faults: dropped connections, a refused port, and IB's connectivity notices
(1100 lost, 1101 restored with data lost, 1102 restored with data kept, farm notices), each with its effect.

:class:`LinkFaults` acts on a :class:`LinkHost` (what it needs from the server), so this module never imports
``sim.server``; the server exposes these actions under their documented names (``drop_connections``, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Protocol

from loguru import logger

from . import outgoing as out
from .broker import SimBroker
from .clock import Scheduler, Timer
from .session import ClientSession

CONNECTIVITY_MESSAGES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    1300: "TWS socket port has been reset and this connection is being dropped. Please reconnect on the new port",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored automatically.",
}


class LinkHost(Protocol):
    """The server as the connection faults see it."""

    broker: SimBroker
    scheduler: Scheduler
    port: int

    @property
    def sessions(self) -> Mapping[int, ClientSession]:
        """Open connections by connection number."""

    def unindex_mkt_data(self, session: ClientSession, req_id: int) -> None:
        """Stop routing ticks for ``req_id`` of ``session``."""

    def listen(self) -> Awaitable[None]:
        """Open the API port (again)."""

    def unlisten(self) -> Awaitable[None]:
        """Close the API port (clients get ECONNREFUSED)."""

    @property
    def listening(self) -> bool:
        """Is the API port accepting connections?"""

    def notify(self) -> None:
        """Wake whoever waits on the server's state (tests, control API)."""


class LinkFaults:
    """Drops, refuses and re-accepts connections, and broadcasts connectivity notices (see module docstring)."""

    def __init__(self, host: LinkHost) -> None:
        self.host = host
        #: re-opens the port after a timed refusal
        self.refuse_timer: Timer | None = None

    def drop_connections(self, reason: str = "daily restart") -> int:
        sessions = list(self.host.sessions.values())
        for s in sessions:
            s.close(reason)
        logger.info("sim dropped {} connection(s): {}", len(sessions), reason)
        return len(sessions)

    async def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening (clients get ECONNREFUSED) for ``seconds`` of sim time."""
        self.host.broker.faults.refusing = True
        await self.host.unlisten()
        if self.refuse_timer is not None:
            self.refuse_timer.cancel()
            self.refuse_timer = None
        if seconds is not None:
            self.refuse_timer = self.host.scheduler.call_later(
                seconds, lambda: asyncio.ensure_future(self.accept_connections())
            )
        logger.info("sim refusing connections{}", f" for {seconds}s" if seconds else "")

    async def accept_connections(self) -> None:
        if self.refuse_timer is not None:
            self.refuse_timer.cancel()
            self.refuse_timer = None
        if not self.host.listening:
            await self.host.listen()
        self.host.broker.faults.refusing = False
        logger.info("sim accepting connections again on port {}", self.host.port)
        self.host.notify()

    def broadcast_code(self, code: int, message: str | None = None) -> None:
        """Send a connectivity notice to every client and apply its effect."""
        text = message or CONNECTIVITY_MESSAGES.get(code, f"Simulated notice {code}")
        faults = self.host.broker.faults
        if code == 1100:
            faults.connectivity_lost = True
        elif code in (1101, 1102):
            faults.connectivity_lost = False
        for s in list(self.host.sessions.values()):
            if s.ready:
                s.send(out.error(-1, code, text, s.version))
                if code == 1101:
                    # "data lost": market and account subscriptions must be re-requested
                    for req_id in list(s.mkt_data):
                        self.host.unindex_mkt_data(s, req_id)
                    s.clear_market_subscriptions()
                    s.account_updates = False
                    s.multi_subs.clear()
        logger.info("sim broadcast {} {}", code, text)
        self.host.notify()

    def connectivity(
        self, codes: list[int] | None = None, interval: float = 1.0, lost_for: float | None = None, restore: int = 1102
    ) -> list[int]:
        """Emit a 1100/1101/1102 style sequence on the simulated clock."""
        if codes is None:
            codes = [1100] + ([restore] if lost_for is not None else [])
            delays = [0.0] + ([lost_for] if lost_for is not None else [])
        else:
            delays = [i * interval for i in range(len(codes))]
        for code, delay in zip(codes, delays):
            if delay <= 0:
                self.broadcast_code(int(code))
            else:
                self.host.scheduler.call_later(delay, self.broadcast_code, int(code))
        return [int(c) for c in codes]

    def cancel(self) -> None:
        """Forget a pending re-open (the server is stopping)."""
        if self.refuse_timer is not None:
            self.refuse_timer.cancel()
            self.refuse_timer = None
