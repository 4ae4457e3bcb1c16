"""Encoding and typed decoding of envelopes: one encoder and one decoder per socket, reused for every frame.

Decoding validates (see ``bus/messages.py``). A frame that fails validation raises :class:`DecodeError` that
still carries whatever could be recovered from the envelope header (sender, request id, body type), so a service
can send the caller a typed :class:`~bus.messages.Rejected` instead of dropping the request.
"""

from __future__ import annotations

import os
import time
from typing import Any, Generic, TypeVar

import msgspec

from bus.messages import SCHEMA_VERSION, Envelope, Event, Reply, Request

B = TypeVar("B")


class DecodeError(Exception):
    """A frame that is not a valid message. ``reason`` is safe to send back to the sender."""

    def __init__(self, reason: str, *, sender: str = "", request_id: str = "", body_type: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.sender = sender
        self.request_id = request_id
        self.body_type = body_type


class _Header(msgspec.Struct, kw_only=True):
    v: int = SCHEMA_VERSION
    sender: str = ""
    request_id: str = ""
    body: msgspec.Raw = msgspec.Raw(b"")


class _BodyType(msgspec.Struct):
    type: str = ""


class Codec(Generic[B]):
    """Encoder plus typed decoder for one channel (``Codec(Event)``, ``Codec(Request)``, ``Codec(Reply)``)."""

    def __init__(self, body_type: Any) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Envelope[body_type])
        self._header = msgspec.msgpack.Decoder(_Header)
        self._body_type = msgspec.msgpack.Decoder(_BodyType)

    def encode(self, envelope: Envelope[Any]) -> bytes:
        return self._encoder.encode(envelope)

    def decode(self, frame: bytes) -> Envelope[B]:
        try:
            env = self._decoder.decode(frame)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise self._explain(frame, exc) from None
        if env.v != SCHEMA_VERSION:
            raise DecodeError(f"schema version {env.v} not supported (this process speaks {SCHEMA_VERSION})",
                              sender=env.sender, request_id=env.request_id)
        return env

    def _explain(self, frame: bytes, exc: Exception) -> DecodeError:
        reason = str(exc).replace("`$.body.", "`").replace("`$.body`", "`message`")
        try:
            head = self._header.decode(frame)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return DecodeError(f"malformed frame: {reason}")
        body_type = ""
        try:
            body_type = self._body_type.decode(head.body).type if head.body else ""
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        return DecodeError(f"invalid {body_type or 'message'}: {reason}", sender=head.sender,
                           request_id=head.request_id, body_type=body_type)


class Stamper:
    """Builds envelopes for one sender: keeps the incarnation and the per-key sequence counters."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        # pid + start time: unique per process run, so receivers can tell a restart from a gap
        self.incarnation = (time.time_ns() // 1_000_000) * 100_000 + os.getpid() % 100_000
        self._seq: dict[str, int] = {}

    def next_seq(self, key: str = "") -> int:
        n = self._seq.get(key, 0) + 1
        self._seq[key] = n
        return n

    def stamp(self, body: Any, *, key: str = "", request_id: str = "") -> Envelope[Any]:
        return Envelope(sender=self.sender, incarnation=self.incarnation, seq=self.next_seq(key),
                        mono_ns=time.monotonic_ns(), wall_ns=time.time_ns(), request_id=request_id, body=body)


def event_codec() -> Codec[Event]:
    return Codec(Event)


def request_codec() -> Codec[Request]:
    return Codec(Request)


def reply_codec() -> Codec[Reply]:
    return Codec(Reply)
