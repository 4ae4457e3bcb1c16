"""Encoding and typed decoding of envelopes: one encoder and one decoder per socket, reused for every frame.

Decoding validates (see ``bus/messages.py``). A frame that fails validation raises :class:`DecodeError` that
still carries whatever could be recovered from the envelope header (sender, request id, body type), so a service
can send the caller a typed :class:`~bus.messages.Rejected` instead of dropping the request.
"""

from __future__ import annotations

import os
import time
from typing import Any, Generic, TypeVar, get_args

import msgspec

from bus.messages import SCHEMA_VERSION, Envelope, Event, Reply, Request, tag_of

B = TypeVar("B")
T = TypeVar("T", bound=msgspec.Struct)

#: What msgspec raises for bad input. RecursionError: a frame nested deeper than the decoder's stack (an attacker's
#: or a fuzzer's ``[[[[...]]]]``) must be a rejected frame, not a crash of the receiving actor.
_BAD_FRAME = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


class DecodeError(ValueError):
    """A frame that is not a valid message. ``reason`` is safe to send back to the sender. ``code`` is the
    :class:`~bus.messages.Rejected` code a service answers with: ``unknown_command`` when the body's type tag is
    not a message of this channel (e.g. a newer client), ``bad_request`` for everything else."""

    def __init__(
        self, reason: str, *, sender: str = "", request_id: str = "", body_type: str = "", code: str = "bad_request"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sender = sender
        self.request_id = request_id
        self.body_type = body_type
        self.code = code


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
        self._tags = frozenset(tag_of(t) for t in (get_args(body_type) or (body_type,)))

    def encode(self, envelope: Envelope[Any]) -> bytes:
        return self._encoder.encode(envelope)

    def decode(self, frame: bytes) -> Envelope[B]:
        try:
            env = self._decoder.decode(frame)
        except _BAD_FRAME as exc:
            raise self._explain(frame, exc) from None
        if env.v != SCHEMA_VERSION:
            raise DecodeError(
                f"schema version {env.v} not supported (this process speaks {SCHEMA_VERSION})",
                sender=env.sender,
                request_id=env.request_id,
            )
        return env

    def _explain(self, frame: bytes, exc: Exception) -> DecodeError:
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        else:
            reason = str(exc).replace("`$.body.", "`").replace("`$.body`", "`message`")
        try:
            head = self._header.decode(frame)
        except _BAD_FRAME:
            return DecodeError(f"malformed frame: {reason}")
        body_type = ""
        try:
            body_type = self._body_type.decode(head.body).type if head.body else ""
        except _BAD_FRAME:
            pass
        if body_type and body_type not in self._tags:
            return DecodeError(
                f"unknown message type {body_type!r}",
                sender=head.sender,
                request_id=head.request_id,
                body_type=body_type,
                code="unknown_command",
            )
        return DecodeError(
            f"invalid {body_type or 'message'}: {reason}",
            sender=head.sender,
            request_id=head.request_id,
            body_type=body_type,
        )


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

    def stamp(self, body: Any, *, key: str = "", request_id: str = "", deadline_wall_ns: int = 0) -> Envelope[Any]:
        return Envelope(
            sender=self.sender,
            incarnation=self.incarnation,
            seq=self.next_seq(key),
            mono_ns=time.monotonic_ns(),
            wall_ns=time.time_ns(),
            request_id=request_id,
            deadline_wall_ns=deadline_wall_ns,
            body=body,
        )


def validate(msg: T) -> T:
    """Check a locally built message exactly as a receiver will (types, ``Meta`` constraints, ``__post_init__``)
    and return it; raises :class:`DecodeError` naming the field. Construction alone only runs ``__post_init__``,
    so an SDK can call this before sending to fail fast with the receiver's reason."""
    try:
        return msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=type(msg))
    except _BAD_FRAME as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).replace("`$.", "`")
        raise DecodeError(f"invalid {type(msg).__name__}: {reason}", body_type=tag_of(type(msg)) or "") from None


def event_codec() -> Codec[Event]:
    return Codec(Event)


def request_codec() -> Codec[Request]:
    return Codec(Request)


def reply_codec() -> Codec[Reply]:
    return Codec(Reply)
