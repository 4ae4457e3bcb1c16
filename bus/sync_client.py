"""The blocking request/reply caller for scripts, the CLI and tests: one call at a time on one DEALER socket, with
the same request ids, timeouts, retries and deadlines as the asyncio client (:mod:`bus.retry`).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import zmq
from loguru import logger

from bus.codec import DecodeError, Stamper
from bus.dealer import DealerClient, bad_reply, client_socket
from bus.messages import tag_of
from bus.retry import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, RequestTimeout, backoff_s, call_deadline_ns, new_request_id

if TYPE_CHECKING:
    from bus.security import Security


class SyncClient(DealerClient):
    """Blocking DEALER client for scripts, the CLI and tests (one call at a time)."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        service: str,
        stamper: Stamper | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        security: Security | None = None,
        server_key: str | bytes | None = None,
    ) -> None:
        super().__init__(endpoint, service, stamper or Stamper(f"cli-{uuid.uuid4().hex[:6]}"), timeout_s, retries)
        self.sock = client_socket(ctx, endpoint, security, server_key)

    def _send(self, payload: bytes, seconds: float) -> bool:
        """Queue one attempt, waiting at most ``seconds`` for the socket to accept it (see AsyncClient._send)."""
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        if not self.sock.poll(max(1, int(seconds * 1000)), zmq.POLLOUT):
            return False
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def call(self, body: Any, *, timeout_s: float | None = None, retries: int | None = None) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        rid = new_request_id()
        start = time.monotonic()
        call_deadline = call_deadline_ns(timeout, attempts)
        for attempt in range(attempts):
            deadline = time.monotonic() + timeout
            stamped = self.stamper.stamp(body, request_id=rid, deadline_wall_ns=call_deadline)
            if not self._send(self._req.encode(stamped), timeout):
                deadline = 0.0  # could not even queue it: this attempt timed out
            while (left := deadline - time.monotonic()) > 0:
                if not self.sock.poll(max(1, int(left * 1000))):
                    break
                frames = self.sock.recv_multipart()
                try:
                    env = self._rep.decode(frames[-1])
                except DecodeError as exc:
                    logger.warning("client of {}: undecodable reply: {}", self.service, exc.reason)
                    if exc.request_id == rid:  # the caller gets a typed answer, not a timeout
                        return bad_reply(self.service, exc)
                    continue
                if env.request_id == rid:
                    return env.body
                # a late reply to an earlier call: ignore
            if attempt + 1 < attempts:
                time.sleep(backoff_s(attempt))  # backoff between attempts, not synchronisation
        raise RequestTimeout(self.service, tag_of(type(body)), attempts, time.monotonic() - start)

    def close(self) -> None:
        self.sock.close(0)
