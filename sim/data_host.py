"""What the data, reference and P&L handlers (and the replay) need from the
server: a small interface, so those modules never import the server (the
server imports them to register their handlers).  ``SimServer`` satisfies
it structurally."""

from __future__ import annotations

from typing import Mapping, Protocol

from .broker import SimBroker
from .clock import Scheduler, SimClock
from .config import SimConfig
from .entitlements import Entitlements
from .instruments import Instrument, InstrumentUniverse
from .pacing import HistoricalPacing
from .session import ClientSession


class DataHost(Protocol):
    """The server as the data handlers see it."""

    config: SimConfig
    clock: SimClock
    scheduler: Scheduler
    universe: InstrumentUniverse
    broker: SimBroker
    entitlements: Entitlements
    history_pacing: HistoricalPacing
    #: sim time of the last P&L push (pnl_handlers)
    pnl_pushed_at: float

    @property
    def sessions(self) -> Mapping[int, ClientSession]:
        """Open connections by connection number."""

    def index_mkt_data(self, session: ClientSession, req_id: int, inst: Instrument) -> None:
        """Route this instrument's ticks to ``session`` under ``req_id``."""

    def unindex_mkt_data(self, session: ClientSession, req_id: int) -> None:
        """Stop routing ticks for ``req_id`` of ``session``."""

    def send_ticks(self, session: ClientSession, req_id: int, data_type: int, changes: list) -> None:
        """Send quote changes (delayed tick types for data types 3 and 4)."""

    def market_ticks(self, inst: Instrument, changes: list) -> None:
        """Stream changes of one instrument to its subscribers."""

    def notify(self) -> None:
        """Wake whoever waits on the server's state (tests, control API)."""
