"""One client connection: framing, handshake state, subscriptions, pacing."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from .clock import SimClock
from .instruments import Instrument
from .messages import out_name
from .protocol import FrameDecoder, encode_frame
from .trace import ProtocolTrace

#: Bytes read from the socket per call.
READ_CHUNK = 65536
#: A client that lets this much unread data pile up is dropped (IB drops
#: slow consumers too) instead of growing the server's memory forever.
MAX_OUTBOUND_BUFFER = 64 * 1024 * 1024
#: Real-time bars (reqRealTimeBars) are always 5 seconds wide at IB.
REALTIME_BAR_SECONDS = 5
#: After an error-and-drop, how long (wall seconds) to drain the client's
#: input before the final close.
LINGER_SECONDS = 1.0
#: Pacing window (IB: messages per second).
PACING_WINDOW_SECONDS = 1.0


@dataclass
class MarketDataSub:
    """One reqMktData subscription."""

    instrument: Instrument
    data_type: int  # 1 live, 2 frozen, 3 delayed, 4 delayed-frozen
    #: generic tick list asked for (233 RTVolume, 236 shortable, ...)
    generic: frozenset = frozenset()
    #: error 10090: only the subscription-independent ticks are sent
    partial: bool = False


@dataclass
class HistorySub:
    """A reqHistoricalData with keepUpToDate: bar updates follow the walk."""

    instrument: Instrument
    bar_seconds: int
    format_date: int
    last_sent: tuple | None = None
    what_to_show: str = "TRADES"
    use_rth: bool = False


@dataclass
class RealTimeBarSub:
    """A reqRealTimeBars subscription (next bar start, epoch seconds)."""

    instrument: Instrument
    next_bar: float
    what_to_show: str = "TRADES"
    use_rth: bool = False


@dataclass
class TickByTickSub:
    """A reqTickByTickData subscription (Last, AllLast, BidAsk or MidPoint)."""

    instrument: Instrument
    tick_type: str


@dataclass
class Counters:
    """Per-connection traffic counters (reported by ``state``)."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    by_name_in: dict[str, int] = field(default_factory=dict)


class SessionHost(Protocol):
    """What a connection needs from the server (keeps session.py free of server.py)."""

    clock: SimClock
    trace: ProtocolTrace | None

    def session_closed(self, session: "ClientSession", reason: str) -> None:
        """Forget a closed connection."""


class ClientSession:
    """State of one API connection (see ``SimServer`` for the protocol flow)."""

    def __init__(self, server: SessionHost, conn_id: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.conn_id = conn_id
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(expect_prefix=True)
        self.state = "handshake"  # -> await_start_api -> ready -> closed
        self.version = 0
        self.client_id: int | None = None
        self.connected_at = server.clock.now()
        self.counters = Counters()
        self.market_data_type = 1
        self.mkt_data: dict[int, MarketDataSub] = {}
        self.history_subs: dict[int, HistorySub] = {}
        self.rtb_subs: dict[int, RealTimeBarSub] = {}
        self.tbt_subs: dict[int, TickByTickSub] = {}
        self.scanner_subs: dict[int, object] = {}
        self.account_updates = False
        self.positions_sub = False
        self.multi_subs: dict[int, str] = {}
        self.position_multi_subs: dict[int, str] = {}
        self.summary_subs: dict[int, str] = {}
        self.pnl_subs: set[int] = set()
        self.pnl_single_subs: dict[int, int] = {}
        #: last pnl / pnlSingle values sent per request (updates only on change)
        self.pnl_sent: dict[int, tuple] = {}
        self.auto_open_orders = False
        #: last account values sent, so updates carry only what changed
        self.account_cache: dict[tuple[str, str], str] = {}
        self._pacing: deque[float] = deque()
        self.close_reason = ""
        self.lingering = False

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def label(self) -> str:
        return f"c{self.conn_id}" + (f"/client{self.client_id}" if self.client_id is not None else "")

    # -- output ----------------------------------------------------------------

    def send(self, fields: list) -> None:
        """Encode and queue one message (dropped silently once closed)."""
        if self.state == "closed":
            return
        data = encode_frame(fields)
        self.send_raw(data, fields)

    def send_raw(self, data: bytes, fields: list | None = None) -> None:
        if self.state == "closed":
            return
        transport = self.writer.transport
        if transport.is_closing():
            return
        if fields is not None and self.server.trace is not None:
            self.server.trace.outgoing(self.server.clock.now(), self.conn_id,
                                       out_name(int(fields[0])), fields[1:])
        self.writer.write(data)
        self.counters.messages_out += 1
        self.counters.bytes_out += len(data)
        if transport.get_write_buffer_size() > MAX_OUTBOUND_BUFFER:
            logger.warning("sim {} dropped: client does not read its data", self.label)
            self.close("slow consumer")

    # -- pacing ----------------------------------------------------------------

    def over_pacing_limit(self, limit: int) -> int | None:
        """Record one message; the count in the window if above ``limit``."""
        if limit <= 0:
            return None
        now = time.monotonic()
        window = self._pacing
        window.append(now)
        while window and now - window[0] > PACING_WINDOW_SECONDS:
            window.popleft()
        return len(window) if len(window) > limit else None

    # -- lifecycle ---------------------------------------------------------------

    def close(self, reason: str, linger: bool = False) -> None:
        """Close the connection.

        ``linger``: after an error message, half-close (FIN) and let the
        reader loop discard what the client still sends for a moment.  A
        plain close with unread input makes the kernel send RST, and the
        client may then lose the error message that explains the drop.
        """
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_reason = reason
        self.lingering = linger
        try:
            if linger and self.writer.can_write_eof():
                self.writer.write_eof()
            else:
                self.writer.close()
        except Exception:  # pragma: no cover - transport already gone
            pass
        self.server.session_closed(self, reason)

    def clear_market_subscriptions(self) -> None:
        self.mkt_data.clear()
        self.history_subs.clear()
        self.rtb_subs.clear()
        self.tbt_subs.clear()
        self.scanner_subs.clear()

    def snapshot(self) -> dict:
        return {
            "conn": self.conn_id, "clientId": self.client_id, "state": self.state,
            "serverVersion": self.version, "connectedAt": self.connected_at,
            "marketDataType": self.market_data_type,
            "mktDataSubscriptions": {str(k): v.instrument.local_symbol for k, v in sorted(self.mkt_data.items())},
            "accountUpdates": self.account_updates, "positions": self.positions_sub,
            "counters": {"messages_in": self.counters.messages_in,
                         "messages_out": self.counters.messages_out,
                         "bytes_in": self.counters.bytes_in,
                         "bytes_out": self.counters.bytes_out,
                         "by_name_in": dict(sorted(self.counters.by_name_in.items()))},
        }
