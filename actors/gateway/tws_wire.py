"""The client side of the TWS API socket protocol, as far as ``khazad doctor`` needs it: the opening handshake,
``startApi``, framing and field splitting. The gateway itself speaks to IB through ib_insync (:mod:`actors.gateway.ib`);
this module is for diagnostics that must work without the client library and without a bus.

Wire format (TWS API v100+):

* the client opens with the 4 raw bytes ``API\\0`` followed by one framed, *not* NUL-terminated string
  ``v<min>..<max>[ <options>]``;
* every later message, in both directions, is a frame: a big-endian uint32 length followed by that many payload
  bytes; a payload is a sequence of text fields, each terminated by ``\\0``;
* the server answers the version range with a frame of exactly two fields, the negotiated server version and a
  connection-time string.

The simulator (``sim/protocol.py``) implements the server side of the same format; the two never import each other
(the actors do not depend on the simulator). ``tests/gateway/test_gateway_doctor.py`` checks that they agree.
"""

from __future__ import annotations

import struct

API_PREFIX = b"API\0"
LENGTH_PREFIX = struct.Struct(">I")
#: IB Gateway accepts frames up to 16 MiB; anything larger is garbage.
MAX_FRAME_SIZE = 0xFFFFFF
#: ``startApi``: message id 71, version 2
START_API = (71, 2)


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid TWS API message."""


def frame_bytes(payload: bytes) -> bytes:
    """Prefix an encoded payload with its length."""
    return LENGTH_PREFIX.pack(len(payload)) + payload


def encode_frame(fields: tuple[object, ...] | list[object]) -> bytes:
    """One frame of NUL-terminated text fields (ints and strings: all a client's opening messages carry)."""
    return frame_bytes("".join(f"{'' if f is None else f}\0" for f in fields).encode("utf-8"))


def split_fields(payload: bytes) -> list[str]:
    """A payload's text fields; ProtocolError for a payload that is not NUL-terminated UTF-8 (garbage)."""
    if not payload or not payload.endswith(b"\0"):
        raise ProtocolError("payload is empty or not NUL-terminated")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"payload is not UTF-8: {exc}") from None
    fields = text.split("\0")
    fields.pop()  # the terminator of the last field leaves an empty tail
    return fields


class FrameDecoder:
    """Incremental decoder of what a server sends: feed bytes as they arrive, get whole payloads (the first one is
    the handshake answer)."""

    def __init__(self, *, max_frame: int = MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every payload now complete, in order."""
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= LENGTH_PREFIX.size:
            (size,) = LENGTH_PREFIX.unpack_from(self._buffer)
            if size == 0 or size > self._max_frame:
                raise ProtocolError(f"invalid frame length {size}")
            end = LENGTH_PREFIX.size + size
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[LENGTH_PREFIX.size : end]))
            del self._buffer[:end]
        return out


def build_client_handshake(min_v: int, max_v: int, options: str = "") -> bytes:
    """The bytes a client sends first: ``API\\0`` + framed ``v<min>..<max>``."""
    text = f"v{min_v}..{max_v}" + (f" {options}" if options else "")
    return API_PREFIX + frame_bytes(text.encode("ascii"))


def build_start_api(client_id: int, optional_capabilities: str = "") -> bytes:
    """The startApi frame (``71,2,clientId,optionalCapabilities``)."""
    return encode_frame([*START_API, client_id, optional_capabilities])


def parse_server_handshake(payload: bytes) -> tuple[int, str]:
    """(server version, connection time) from the server's first frame."""
    fields = split_fields(payload)
    if len(fields) != 2:
        raise ProtocolError(f"server handshake has {len(fields)} fields")
    try:
        return int(fields[0]), fields[1]
    except ValueError:
        raise ProtocolError(f"bad server version {fields[0]!r}") from None
