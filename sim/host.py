"""What the request handlers need from the server: a small interface.

``handlers.py`` is typed against ``SimHost`` rather than the ``SimServer``
class, so the server can import its handlers without the handlers importing
the server back (issue 19: sim/ had an import circle between server,
handlers and session).  ``SimServer`` satisfies this protocol structurally.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from .broker import SimBroker
from .clock import SimClock
from .config import SimConfig
from .instruments import Instrument, InstrumentUniverse
from .session import ClientSession


class SimHost(Protocol):
    """The server as a request handler sees it."""

    config: SimConfig
    clock: SimClock
    universe: InstrumentUniverse
    broker: SimBroker

    @property
    def sessions(self) -> Mapping[int, ClientSession]:
        """Open connections by connection number."""

    def index_mkt_data(self, session: ClientSession, req_id: int, inst: Instrument) -> None:
        """Route this instrument's ticks to ``session`` under ``req_id``."""

    def unindex_mkt_data(self, session: ClientSession, req_id: int) -> None:
        """Stop routing ticks for ``req_id`` of ``session``."""

    def send_ticks(self, session: ClientSession, req_id: int, data_type: int, changes: list) -> None:
        """Send quote changes (delayed tick types for data types 3 and 4)."""
