"""TWS API socket framing, field encoding and handshake helpers.

Everything here is free of asyncio and of simulator state so that both the
simulator (server side) and client-side diagnostics such as ``khazad doctor``
can reuse it.

Wire format (TWS API v100+):

* the client opens with the 4 raw bytes ``API\\0`` followed by one framed,
  *not* NUL-terminated string ``v<min>..<max>[ <options>]``;
* every later message, in both directions, is a frame: a big-endian uint32
  length followed by that many payload bytes;
* a payload is a sequence of text fields, each terminated by ``\\0``;
* the server answers the version range with a frame of exactly two fields,
  the negotiated server version and a connection-time string.
"""

from __future__ import annotations

import math
import struct
from typing import Iterable, Sequence

API_PREFIX = b"API\0"
LENGTH_PREFIX = struct.Struct(">I")

#: The highest server version the simulator speaks. At 176 every message is
#: text (protobuf starts at 201), ``error`` still has a version field and no
#: errorTime (194) and ``advancedOrderRejectJson`` is present (166).
MAX_SERVER_VERSION = 176
#: The lowest negotiated version we accept: ib_insync and ib_async refuse
#: anything older than 157 themselves, and our message layouts assume it.
MIN_SERVER_VERSION = 157

#: IB Gateway accepts frames up to 16 MiB; anything larger is garbage.
MAX_FRAME_SIZE = 0xFFFFFF
#: A handshake version string is tiny; a huge first frame means a non-TWS peer.
MAX_HANDSHAKE_SIZE = 4096

#: How unset doubles travel on the wire (Java's Double.MAX_VALUE).
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_DOUBLE_STR = "1.7976931348623157E308"
UNSET_INTEGER = 2**31 - 1
INFINITY_STR = "Infinity"


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid TWS API message."""


# --------------------------------------------------------------------------
# Field encoding
# --------------------------------------------------------------------------


def format_float(value: float) -> str:
    """Shortest text that round-trips ``value``; integers keep a ``.0``.

    Unset doubles use IB's own spelling so that ibapi's Decimal decoder
    recognises them.
    """
    if value >= UNSET_DOUBLE:
        return UNSET_DOUBLE_STR
    if math.isinf(value):
        return INFINITY_STR
    if math.isnan(value):
        # IB never sends NaN; an empty field is what clients treat as "unset".
        return ""
    return repr(float(value))


def format_quantity(value: float) -> str:
    """Sizes and quantities: integral values without a decimal point."""
    if value >= UNSET_DOUBLE:
        return UNSET_DOUBLE_STR
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def format_field(value: object) -> str:
    """Text for one field: ``None`` is empty, bools are ``0``/``1``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def encode_payload(fields: Iterable[object]) -> bytes:
    """NUL-terminated fields, without the length prefix."""
    return "".join(format_field(f) + "\0" for f in fields).encode("utf-8")


def encode_frame(fields: Iterable[object]) -> bytes:
    """One complete frame (length prefix + NUL-terminated fields)."""
    payload = encode_payload(fields)
    return LENGTH_PREFIX.pack(len(payload)) + payload


def frame_bytes(payload: bytes) -> bytes:
    """Prefix an already encoded payload with its length."""
    return LENGTH_PREFIX.pack(len(payload)) + payload


def split_fields(payload: bytes) -> list[str]:
    """Decode a payload into its text fields.

    Raises ProtocolError for payloads that are not NUL-terminated UTF-8,
    which is how we recognise garbage.
    """
    if not payload or not payload.endswith(b"\0"):
        raise ProtocolError("payload is empty or not NUL-terminated")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"payload is not UTF-8: {exc}") from None
    fields = text.split("\0")
    fields.pop()  # the terminator of the last field leaves an empty tail
    return fields


# --------------------------------------------------------------------------
# Incremental frame decoding
# --------------------------------------------------------------------------


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole payloads.

    Server side: ``FrameDecoder(expect_prefix=True)`` first checks the
    ``API\\0`` prefix, then yields the handshake payload (raw version text)
    and afterwards normal payloads.  Client side (e.g. a doctor tool reading
    the server's answers): ``FrameDecoder(expect_prefix=False)``.
    """

    def __init__(self, *, expect_prefix: bool = True,
                 max_frame: int = MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self._need_prefix = expect_prefix
        self._first_frame = expect_prefix
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every payload now complete, in order."""
        self._buffer += data
        out: list[bytes] = []
        if self._need_prefix:
            if len(self._buffer) < len(API_PREFIX):
                if not API_PREFIX.startswith(bytes(self._buffer)):
                    raise ProtocolError("connection does not start with API\\0")
                return out
            if bytes(self._buffer[:len(API_PREFIX)]) != API_PREFIX:
                raise ProtocolError("connection does not start with API\\0")
            del self._buffer[:len(API_PREFIX)]
            self._need_prefix = False
        while len(self._buffer) >= LENGTH_PREFIX.size:
            (size,) = LENGTH_PREFIX.unpack_from(self._buffer)
            limit = MAX_HANDSHAKE_SIZE if self._first_frame else self._max_frame
            if size == 0 or size > limit:
                raise ProtocolError(f"invalid frame length {size}")
            end = LENGTH_PREFIX.size + size
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[LENGTH_PREFIX.size:end]))
            del self._buffer[:end]
            self._first_frame = False
        return out


# --------------------------------------------------------------------------
# Handshake helpers (both sides)
# --------------------------------------------------------------------------


def build_client_handshake(min_v: int, max_v: int, options: str = "") -> bytes:
    """The bytes a client sends first: ``API\\0`` + framed ``v<min>..<max>``."""
    text = f"v{min_v}..{max_v}"
    if options:
        text += " " + options
    raw = text.encode("ascii")
    return API_PREFIX + frame_bytes(raw)


def build_start_api(client_id: int, optional_capabilities: str = "") -> bytes:
    """The startApi frame (``71,2,clientId,optionalCapabilities``)."""
    return encode_frame([71, 2, client_id, optional_capabilities])


def parse_client_handshake(payload: bytes) -> tuple[int, int, str]:
    """Parse ``v<min>..<max>[ options]`` into (min, max, options)."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("handshake is not ASCII") from None
    text = text.rstrip("\0")
    head, _, options = text.partition(" ")
    if not head.startswith("v"):
        raise ProtocolError(f"bad handshake {text[:40]!r}")
    lo, sep, hi = head[1:].partition("..")
    try:
        min_v = int(lo)
        max_v = int(hi) if sep else min_v
    except ValueError:
        raise ProtocolError(f"bad handshake {text[:40]!r}") from None
    if min_v <= 0 or max_v < min_v:
        raise ProtocolError(f"bad version range {min_v}..{max_v}")
    return min_v, max_v, options


def negotiate_version(client_min: int, client_max: int,
                      server_max: int = MAX_SERVER_VERSION) -> int | None:
    """The version to announce, or None if the ranges do not overlap."""
    version = min(client_max, server_max)
    if version < max(client_min, MIN_SERVER_VERSION):
        return None
    return version


def build_server_handshake(version: int, connection_time: str) -> bytes:
    """The server's answer: one frame with exactly two fields."""
    return encode_frame([version, connection_time])


def parse_server_handshake(payload: bytes) -> tuple[int, str]:
    """Client side: (server version, connection time) from the first frame."""
    fields = split_fields(payload)
    if len(fields) != 2:
        raise ProtocolError(f"server handshake has {len(fields)} fields")
    try:
        return int(fields[0]), fields[1]
    except ValueError:
        raise ProtocolError(f"bad server version {fields[0]!r}") from None


# --------------------------------------------------------------------------
# Reading fields
# --------------------------------------------------------------------------


class FieldReader:
    """Cursor over the fields of one incoming message.

    Every accessor raises ProtocolError (never IndexError/ValueError) so the
    server can treat any malformed request uniformly.
    """

    __slots__ = ("fields", "pos")

    def __init__(self, fields: Sequence[str], pos: int = 0) -> None:
        self.fields = fields
        self.pos = pos

    def remaining(self) -> int:
        return len(self.fields) - self.pos

    def str(self) -> str:
        if self.pos >= len(self.fields):
            raise ProtocolError(f"message too short (wanted field {self.pos})")
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def opt_str(self, default: str = "") -> str:
        """A trailing field some client versions omit."""
        return self.str() if self.pos < len(self.fields) else default

    def int(self, default: int = 0) -> int:
        text = self.str()
        if text == "":
            return default
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ProtocolError(f"expected an integer, got {text[:20]!r}") from None
            if not as_float.is_integer():
                raise ProtocolError(f"expected an integer, got {text[:20]!r}")
            return int(as_float)

    def float(self, default: float | None = None) -> float | None:
        """A double; empty or IB's unset value gives ``default``."""
        text = self.str()
        if text == "":
            return default
        try:
            value = float(text)
        except ValueError:
            raise ProtocolError(f"expected a number, got {text[:20]!r}") from None
        if math.isnan(value):
            raise ProtocolError("NaN is not a valid value")
        if value >= UNSET_DOUBLE:
            return default
        return value

    def bool(self) -> bool:
        text = self.str()
        if text in ("", "0", "false", "False"):
            return False
        if text in ("1", "true", "True"):
            return True
        try:
            return float(text) != 0
        except ValueError:
            raise ProtocolError(f"expected a boolean, got {text[:20]!r}") from None

    def skip(self, n: int = 1) -> None:
        if self.pos + n > len(self.fields):
            raise ProtocolError("message too short")
        self.pos += n
