"""The simulator's API connections: one task per TCP connection reads its bytes, decodes its frames and runs each
request (see ``sim.protocol``): ``API\\0`` + version range -> the server's two-field handshake (sent alone: ibapi
decodes only the first message of its first read) -> startApi -> managedAccounts, nextValidId and the farm-OK
notices -> requests, dispatched to the handlers registered in ``sim.handlers``.

:class:`ConnectionHandler` is typed against :class:`ConnectionHost` (what it needs from the server), so this module
never imports ``sim.server`` (the server imports it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from loguru import logger

from . import outgoing as out
from .handlers import HANDLERS, UNSUPPORTED_REQ_ID_POSITION, handle_unsupported
from .host import SimHost
from .messages import ErrorCode, In, in_name
from .protocol import (
    FieldReader,
    ProtocolError,
    build_server_handshake,
    negotiate_version,
    parse_client_handshake,
    split_fields,
)
from .session import LINGER_SECONDS, READ_CHUNK, ClientSession
from .trace import ProtocolTrace

#: How long a closing connection waits for its socket to close (and stop() for the connections).
CLOSE_TIMEOUT = 1.0

FARM_NOTICES = (
    (ErrorCode.MARKET_DATA_FARM_OK, "Market data farm connection is OK:usfarm"),
    (ErrorCode.HMDS_FARM_OK, "HMDS data farm connection is OK:ushmds"),
    (ErrorCode.SEC_DEF_FARM_OK, "Sec-def data farm connection is OK:secdefnj"),
)
CLIENT_ID_IN_USE_MSG = "Unable to connect as the client id is already in use. Retry with a unique client id."


class ConnectionHost(SimHost, Protocol):
    """The server as its connections see it: the request handlers' view plus the session registry, the request log
    and the trace."""

    trace: ProtocolTrace | None
    pacing_limit: int
    by_client_id: dict[int, ClientSession]
    request_log: deque[dict]

    @property
    def sessions(self) -> dict[int, ClientSession]:
        """Open connections by connection number (a connection adds itself)."""

    def session_closed(self, session: ClientSession, reason: str) -> None:
        """Forget a closed connection."""

    def notify(self) -> None:
        """Wake whoever waits on the server's state (tests, control API)."""


class ConnectionHandler:
    """Serves API connections for a :class:`ConnectionHost`: read loop, handshake, startApi, pacing, dispatch."""

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        #: the running connection tasks (stop() waits for them, then cancels what is left)
        self.tasks: set[asyncio.Task] = set()
        self._conn_seq = 0
        self._request_seq = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self._conn_seq += 1
        session = ClientSession(self.host, self._conn_seq, reader, writer)
        self.host.sessions[session.conn_id] = session
        if self.host.trace is not None:
            self.host.trace.event(self.host.clock.now(), session.conn_id, "connect")
        logger.info("sim connection c{} opened", session.conn_id)
        try:
            while session.state != "closed":
                try:
                    data = await reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    session.close("connection reset")
                    break
                if not data:
                    session.close("peer closed")
                    break
                session.counters.bytes_in += len(data)
                try:
                    for payload in session.decoder.feed(data):
                        if session.state == "closed":
                            break
                        self.handle_payload(session, payload)
                except ProtocolError as exc:
                    self._reject_garbage(session, str(exc))
                except Exception as exc:  # a bug of ours: tell the client, drop it
                    logger.exception("sim error processing a request from {}", session.label)
                    session.send(
                        out.error(
                            -1,
                            ErrorCode.ERROR_PROCESSING_REQUEST,
                            f"Error processing request: {exc}",
                            session.version or 176,
                        )
                    )
                    session.close(f"internal error: {exc}", linger=True)
                self.host.notify()
        except asyncio.CancelledError:
            session.close("server stopping")
            raise
        finally:
            session.close(session.close_reason or "closed")
            if session.lingering:
                await self._linger(reader)
                writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, ConnectionError, OSError, asyncio.CancelledError):
                pass
            if task is not None:
                self.tasks.discard(task)
            self.host.notify()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader) -> None:
        """Discard the client's input until it closes (or LINGER_SECONDS)."""

        async def drain() -> None:
            while await reader.read(READ_CHUNK):
                pass

        try:
            await asyncio.wait_for(drain(), LINGER_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    def _reject_garbage(self, session: ClientSession, why: str) -> None:
        logger.warning("sim {} sent garbage ({}); dropping it", session.label, why)
        if self.host.trace is not None:
            self.host.trace.event(self.host.clock.now(), session.conn_id, "garbage", why)
        if session.state in ("ready", "await_start_api"):
            session.send(
                out.error(-1, ErrorCode.ERROR_READING_REQUEST, f"Error reading request: {why}", session.version)
            )
        session.close(f"garbage: {why}", linger=True)

    def handle_payload(self, session: ClientSession, payload: bytes) -> None:
        now = self.host.clock.now()
        if session.state == "handshake":
            lo, hi, options = parse_client_handshake(payload)
            if self.host.trace is not None:
                self.host.trace.incoming(now, session.conn_id, "handshake", [f"v{lo}..{hi}", options])
            version = negotiate_version(lo, hi, self.host.config.max_server_version)
            if version is None:
                logger.warning("sim {} offers v{}..{}: no common version", session.label, lo, hi)
                session.close(f"unsupported client versions v{lo}..{hi}")
                return
            session.version = version
            session.state = "await_start_api"
            conn_time = out.connection_time(now)
            if self.host.trace is not None:
                self.host.trace.outgoing(now, session.conn_id, "handshake", [version, conn_time])
            session.send_raw(build_server_handshake(version, conn_time))
            return
        fields = split_fields(payload)
        try:
            msg_id = int(fields[0])
        except (ValueError, IndexError):
            raise ProtocolError(f"bad message id {fields[0][:20] if fields else ''!r}") from None
        name = in_name(msg_id)
        session.counters.messages_in += 1
        session.counters.by_name_in[name] = session.counters.by_name_in.get(name, 0) + 1
        self._log_request(session, msg_id, name, fields)
        if self.host.trace is not None:
            self.host.trace.incoming(now, session.conn_id, name, fields[1:])
        rate = session.over_pacing_limit(self.host.pacing_limit)
        if rate is not None:
            logger.warning("sim {} exceeded {} messages/s; pacing violation", session.label, self.host.pacing_limit)
            session.send(
                out.error(
                    -1,
                    ErrorCode.PACING,
                    f"Max rate of messages per second has been exceeded:max={self.host.pacing_limit} rec={rate} (1)",
                    session.version,
                )
            )
            session.close("pacing violation", linger=True)
            return
        reader = FieldReader(fields, 1)
        if session.state == "await_start_api":
            if msg_id != In.START_API:
                raise ProtocolError(f"expected startApi, got {name}")
            self._start_api(session, reader)
            return
        if msg_id == In.START_API:
            raise ProtocolError("startApi sent twice")
        handler = HANDLERS.get(msg_id)
        if handler is not None:
            handler(self.host, session, reader)
        elif msg_id in UNSUPPORTED_REQ_ID_POSITION or msg_id in In._value2member_map_:
            handle_unsupported(self.host, session, msg_id, reader)
        else:
            raise ProtocolError(f"unknown message id {msg_id}")

    def _log_request(self, session: ClientSession, msg_id: int, name: str, fields: list[str]) -> None:
        self._request_seq += 1
        order_id = None
        try:
            if msg_id == In.PLACE_ORDER:
                order_id = int(fields[1])
            elif msg_id == In.CANCEL_ORDER:
                order_id = int(fields[2])
        except (ValueError, IndexError):
            order_id = None
        self.host.request_log.append(
            {
                "seq": self._request_seq,
                "clientId": session.client_id,
                "conn": session.conn_id,
                "name": name,
                "orderId": order_id,
                "time": self.host.clock.now(),
            }
        )

    def _start_api(self, session: ClientSession, r: FieldReader) -> None:
        r.skip(1)  # version
        client_id = r.int()
        r.opt_str()  # optional capabilities
        other = self.host.by_client_id.get(client_id)
        if other is not None and other.state == "ready":
            logger.warning("sim c{} asked for client id {} which is in use", session.conn_id, client_id)
            session.send(out.error(-1, ErrorCode.CLIENT_ID_IN_USE, CLIENT_ID_IN_USE_MSG, session.version))
            session.close("client id in use", linger=True)
            return
        session.client_id = client_id
        session.state = "ready"
        self.host.by_client_id[client_id] = session
        if self.host.request_log and self.host.request_log[-1]["conn"] == session.conn_id:
            self.host.request_log[-1]["clientId"] = client_id
        logger.info("sim {} started API (server version {})", session.label, session.version)
        session.send(out.managed_accounts(self.host.config.account))
        session.send(out.next_valid_id(self.host.broker.next_valid_id(client_id)))
        for code, text in FARM_NOTICES:
            session.send(out.error(-1, code, text, session.version))
