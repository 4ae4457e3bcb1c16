"""Test doubles for the SDK and CLI unit tests: small ROUTER services (the real ``bus.reqrep.Service``) with a
scripted handler, each on its own I/O thread, and an in-thread event proxy (the real ``bus.proxy.serve``).

They stand in for the order manager, portfolio, gateway, risk governor and monitor so that request shapes,
error mapping and timeouts can be tested without the actors. Everything binds 127.0.0.1 and closes with
linger 0 on ``stop()``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import Ping, Pong, Rejected, tag_of
from bus.service import CallContext, Service

#: How long start()/stop() wait for the service thread.
THREAD_TIMEOUT_S = 5.0

Handler = Callable[[Any], Any]


class FakeService:
    """A ROUTER service on ``endpoint`` answering with ``handler(body)`` (a value or an awaitable).

    Every request body is recorded in ``requests`` (in arrival order) with the caller's envelope sender in
    ``senders``. Ping is answered automatically. ``handler`` returning None means "never answer" (a hung service).
    """

    def __init__(self, endpoint: str, name: str, handler: Handler | None = None, *, security: Any = None) -> None:
        self.endpoint = endpoint
        self.security = security
        self.name = name
        self.handler = handler or (lambda body: Rejected(code="unknown_command", reason="no handler",
                                                          request_type=tag_of(type(body))))
        self.requests: list[Any] = []
        self.senders: list[str] = []
        self.request_ids: list[str] = []
        #: the authenticated CURVE identity of each caller ("" without CURVE)
        self.user_ids: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    async def _handle(self, ctx: CallContext, body: Any) -> Any:
        self.requests.append(body)
        self.senders.append(ctx.sender)
        self.request_ids.append(ctx.request_id)
        self.user_ids.append(ctx.user_id)
        if isinstance(body, Ping):
            return Pong(actor=self.name)
        reply = self.handler(body)
        if inspect.isawaitable(reply):
            reply = await reply
        if reply is None:
            await asyncio.Event().wait()  # never answer: the caller must time out
        return reply

    async def _main(self) -> None:
        ctx = zmq.asyncio.Context()
        self._stop = asyncio.Event()
        try:
            if self.security is not None:
                self.security.start_authenticator(ctx)
            svc = Service(ctx, self.endpoint, self.name, self._handle, stamper=Stamper(self.name),
                          security=self.security)
            task = asyncio.create_task(svc.run())
            self._ready.set()
            await self._stop.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            svc.close()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        finally:
            if self.security is not None:
                self.security.stop_authenticator()
            ctx.destroy(linger=0)

    def start(self) -> "FakeService":
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._main())
            except BaseException:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"fake {self.name} did not start: {self._error!r}")
        return self

    def of_type(self, cls: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, cls)]

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(THREAD_TIMEOUT_S)


class InThreadProxy:
    """The real event proxy (``bus.proxy.serve``) on a thread of the test process."""

    def __init__(self, cfg: KhazadConfig) -> None:
        self.cfg = cfg
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "InThreadProxy":
        from bus.proxy import serve

        self._thread = threading.Thread(target=serve, args=(self.cfg, self._stop, self._ready), name="proxy",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT_S):
            raise RuntimeError("in-thread proxy did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(THREAD_TIMEOUT_S)
