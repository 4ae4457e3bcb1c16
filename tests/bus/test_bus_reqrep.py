"""Request/reply over real sockets and real processes: timeouts in bound, retries executed once, restarts survived,
garbage answered with a typed rejection while the service keeps serving."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import messages as m
from bus import dedup, reqrep
from bus.codec import DecodeError, Stamper, reply_codec, request_codec
from bus.config import KhazadConfig
from bus.async_client import AsyncClient
from bus.retry import RequestTimeout, backoff_s
from bus.sync_client import SyncClient
from tests.support.clients import security, server_key
from tests.support.config import config_of_endpoint, free_port
from tests.support.processes import ActorProcess
from tests.support.programs import PROBE_KEY, probe_client, probe_status
from tests.support.waiting import eventually


def _curve_client(sock: zmq.Socket, endpoint: str) -> None:
    """Make ``sock`` a CURVE client of the probe at ``endpoint`` (operator key), if the bus is authenticated."""
    cfg = config_of_endpoint(endpoint)
    sec = security(cfg) if cfg is not None else None
    if sec is not None:
        sec.make_client(sock, server_key(sec, PROBE_KEY))

#: Scheduling slack on top of a computed bound (a loaded 2-core machine runs other engineers' tests too).
SLACK_S = 1.5
#: More concurrent calls than a DEALER's default send high-water mark (1000): the queue to a dead service fills.
MORE_THAN_SNDHWM = 1100


def _bound(timeout_s: float, retries: int) -> float:
    return timeout_s * (retries + 1) + sum(backoff_s(a) for a in range(retries))


def _envelope(body: dict[str, Any], **header: Any) -> bytes:
    env = {"v": m.SCHEMA_VERSION, "sender": "raw-peer", "incarnation": 1, "seq": 1, "mono_ns": 1, "wall_ns": 1,
           "request_id": "raw-1", "body": body}
    env.update(header)
    return msgspec.msgpack.encode(env)


class RawPeer:
    """A raw DEALER (or REQ) that sends arbitrary frames and returns the reply frames."""

    def __init__(self, ctx: zmq.Context, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        _curve_client(self.sock, endpoint)
        self.sock.connect(endpoint)
        self.codec = reply_codec()

    def call(self, frames: list[bytes], timeout_s: float = 5.0) -> list[bytes]:
        self.sock.send_multipart(frames)
        assert self.sock.poll(int(timeout_s * 1000)), f"no reply to {frames!r:.80}"
        return self.sock.recv_multipart()

    def reply(self, frames: list[bytes]) -> m.Envelope[Any]:
        return self.codec.decode(self.call(frames)[-1])

    def close(self) -> None:
        self.sock.close(0)


class DropFirstReply:
    """Man in the middle: a ROUTER facing one client, a DEALER facing the service; the first reply is dropped."""

    def __init__(self, ctx: zmq.Context, upstream: str) -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.endpoint = ""
        self.requests = 0
        self.replies = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mitm", daemon=True)

    def __enter__(self) -> "DropFirstReply":
        self._thread.start()
        assert self._ready.wait(5), "man in the middle did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        front = self.ctx.socket(zmq.ROUTER)
        back = self.ctx.socket(zmq.DEALER)
        for s in (front, back):
            s.setsockopt(zmq.LINGER, 0)
        try:
            front.bind("tcp://127.0.0.1:*")
            self.endpoint = front.getsockopt(zmq.LAST_ENDPOINT).decode()
            _curve_client(back, self.upstream)  # the client talks plain to us; we talk CURVE upstream
            back.connect(self.upstream)
            poller = zmq.Poller()
            poller.register(front, zmq.POLLIN)
            poller.register(back, zmq.POLLIN)
            client = b""
            self._ready.set()
            while not self._stop.is_set():
                for sock, _ in poller.poll(50):  # wakes periodically to notice _stop
                    if sock is front:
                        client, payload = front.recv_multipart()
                        back.send(payload)
                        self.requests += 1
                    else:
                        payload = back.recv()
                        if not self.dropped:
                            self.dropped += 1
                            continue
                        front.send_multipart([client, payload])
                        self.replies += 1
        finally:
            front.close(0)
            back.close(0)


# ------------------------------------------------------------------------------------------------------------------
# Dead service: a typed timeout within the bound, never a hang
# ------------------------------------------------------------------------------------------------------------------


def test_sync_call_to_dead_service_raises_timeout_within_bound(zctx: zmq.Context) -> None:
    timeout_s, retries = 0.2, 2
    cl = SyncClient(zctx, f"tcp://127.0.0.1:{free_port()}", service="dead", timeout_s=timeout_s, retries=retries)
    start = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        cl.call(m.Ping())
    elapsed = time.monotonic() - start
    cl.close()
    assert info.value.attempts == retries + 1 and info.value.service == "dead"
    assert timeout_s * (retries + 1) * 0.9 <= elapsed <= _bound(timeout_s, retries) + SLACK_S


def test_async_call_to_dead_service_raises_timeout_within_bound() -> None:
    timeout_s, retries = 0.2, 2

    async def scenario() -> tuple[RequestTimeout, float]:
        ctx = zmq.asyncio.Context()
        cl = AsyncClient(ctx, f"tcp://127.0.0.1:{free_port()}", service="dead", stamper=Stamper("t"),
                         timeout_s=timeout_s, retries=retries)
        start = time.monotonic()
        try:
            await cl.call(m.Ping())
        except RequestTimeout as exc:
            return exc, time.monotonic() - start
        finally:
            cl.close()
            ctx.destroy(linger=0)
        raise AssertionError("a dead service answered")

    exc, elapsed = asyncio.run(scenario())
    assert exc.attempts == retries + 1 and exc.request_type == "ping"
    assert timeout_s * (retries + 1) * 0.9 <= elapsed <= _bound(timeout_s, retries) + SLACK_S


def test_async_calls_beyond_the_send_queue_to_dead_service_all_time_out() -> None:
    """Regression: once the DEALER's queue to a dead service was full, ``await send`` blocked for ever."""
    timeout_s = 0.3

    async def scenario() -> list[Any]:
        ctx = zmq.asyncio.Context()
        cl = AsyncClient(ctx, f"tcp://127.0.0.1:{free_port()}", service="dead", stamper=Stamper("t"),
                         timeout_s=timeout_s, retries=0)
        try:
            calls = asyncio.gather(*(cl.call(m.Ping()) for _ in range(MORE_THAN_SNDHWM)), return_exceptions=True)
            return await asyncio.wait_for(calls, _bound(timeout_s, 0) + SLACK_S + 5)
        finally:
            cl.close()
            ctx.destroy(linger=0)

    results = asyncio.run(scenario())
    assert len(results) == MORE_THAN_SNDHWM and all(isinstance(r, RequestTimeout) for r in results)


def test_sync_calls_beyond_the_send_queue_to_dead_service_all_time_out(zctx: zmq.Context) -> None:
    cl = SyncClient(zctx, f"tcp://127.0.0.1:{free_port()}", service="dead", timeout_s=0.001, retries=0)
    outcome: list[int] = []

    def many() -> None:
        timeouts = 0
        for _ in range(MORE_THAN_SNDHWM):
            try:
                cl.call(m.Ping())
            except RequestTimeout:
                timeouts += 1
        outcome.append(timeouts)

    worker = threading.Thread(target=many, daemon=True)
    worker.start()
    worker.join(30)
    cl.close()
    assert outcome == [MORE_THAN_SNDHWM], "a blocking send to a dead service hung the caller"


# ------------------------------------------------------------------------------------------------------------------
# Retries are executed once
# ------------------------------------------------------------------------------------------------------------------


def test_sync_reply_lost_once_is_retried_and_executed_exactly_once(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    start_probe()
    with DropFirstReply(zctx, cfg.bus.monitor) as mitm:
        cl = SyncClient(zctx, mitm.endpoint, service="probe", stamper=Stamper("lost-once"), timeout_s=0.5,
                        retries=2)
        try:
            reply = cl.call(m.Kill(kill_id="lost-once", reason="test"))
        finally:
            cl.close()
    assert reply == m.Ack(detail="1")
    assert (mitm.dropped, mitm.requests, mitm.replies) == (1, 2, 1)
    status = probe_status(zctx, cfg.bus.monitor)
    assert status["executed:lost-once"] == "1" and status["duplicates"] == "1"


def test_async_reply_lost_once_is_retried_and_executed_exactly_once(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    start_probe()

    async def scenario(endpoint: str) -> Any:
        actx = zmq.asyncio.Context()
        cl = AsyncClient(actx, endpoint, service="probe", stamper=Stamper("lost-once-async"), timeout_s=0.5,
                         retries=2)
        try:
            return await cl.call(m.Kill(kill_id="lost-once-async", reason="test"))
        finally:
            cl.close()
            actx.destroy(linger=0)

    with DropFirstReply(zctx, cfg.bus.monitor) as mitm:
        reply = asyncio.run(scenario(mitm.endpoint))
    assert reply == m.Ack(detail="1")
    assert (mitm.dropped, mitm.requests) == (1, 2)
    assert probe_status(zctx, cfg.bus.monitor)["executed:lost-once-async"] == "1"


def test_retries_while_the_handler_runs_join_it_and_execute_once(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    start_probe()
    work_s, timeout_s = 1.0, 0.3  # the handler outlasts several attempts
    cl = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("slow"), timeout_s=timeout_s,
                    retries=6)
    try:
        reply = cl.call(m.WaitOrder(strategy_id="s1", client_order_id="slow-1", timeout_s=work_s))
    finally:
        cl.close()
    assert reply == m.Ack(detail="1")
    status = probe_status(zctx, cfg.bus.monitor)
    assert status["executed:slow-1"] == "1" and int(status["duplicates"]) >= 1


# ------------------------------------------------------------------------------------------------------------------
# Service restarted mid-stream
# ------------------------------------------------------------------------------------------------------------------


def test_sync_client_recovers_after_service_restart(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    first = start_probe()
    cl = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("restart"), timeout_s=0.3, retries=1)
    try:
        assert isinstance(cl.call(m.Ping()), m.Pong)
        first.kill()
        with pytest.raises(RequestTimeout):
            cl.call(m.Ping())
        second = start_probe()
        assert second.pid != first.pid
        eventually(lambda: _answers(cl), message="the same client never reached the restarted service")
        assert cl.call(m.Kill(kill_id="after-restart", reason="test")) == m.Ack(detail="1")
    finally:
        cl.close()
    assert probe_status(zctx, cfg.bus.monitor)["executed:after-restart"] == "1"


def _answers(cl: SyncClient) -> bool:
    try:
        return isinstance(cl.call(m.Ping()), m.Pong)
    except RequestTimeout:
        return False


class _CallStream:
    """Sequential calls from one AsyncClient in a thread of its own (its own loop and context) until stopped."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.results: list[tuple[float, str, Any]] = []  # (monotonic time, kill id, reply or exception)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="call-stream", daemon=True)

    def successes_after(self, t: float) -> int:
        return sum(1 for at, _, r in list(self.results) if at > t and isinstance(r, m.Ack))

    async def _run(self) -> None:
        ctx = zmq.asyncio.Context()
        cfg = config_of_endpoint(self.endpoint)
        sec = security(cfg) if cfg is not None else None
        cl = AsyncClient(ctx, self.endpoint, service="probe", stamper=Stamper("stream"), timeout_s=0.3, retries=1,
                         security=sec, server_key=server_key(sec, PROBE_KEY))
        try:
            n = 0
            while not self._stop.is_set():
                n += 1
                kill_id = f"stream-{n}"
                try:
                    reply: Any = await cl.call(m.Kill(kill_id=kill_id, reason="stream"))
                except Exception as exc:  # recorded and asserted on by the test
                    reply = exc
                self.results.append((time.monotonic(), kill_id, reply))
        finally:
            cl.close()
            ctx.destroy(linger=0)

    def __enter__(self) -> "_CallStream":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def test_async_client_stream_survives_service_restart(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    first = start_probe()
    with _CallStream(cfg.bus.monitor) as stream:
        eventually(lambda: stream.successes_after(0) >= 20, message="stream never got going")
        first.kill()
        killed_at = time.monotonic()
        # the outage is seen by the stream as typed timeouts (never a hang), then the service comes back
        eventually(lambda: any(at > killed_at and isinstance(r, RequestTimeout) for at, _, r in stream.results),
                   message="no RequestTimeout while the service was dead")
        start_probe()
        restarted_at = time.monotonic()
        eventually(lambda: stream.successes_after(restarted_at) >= 20,
                   message=lambda: f"stream did not recover: {stream.results[-3:]}")
    outcomes = {type(r).__name__ for _, _, r in stream.results}
    assert outcomes <= {"Ack", "RequestTimeout"}, outcomes
    executed_again = {k: v for k, v in probe_status(zctx, cfg.bus.monitor).items()
                      if k.startswith("executed:stream-") and v != "1"}
    assert executed_again == {}, "a retried call ran twice on the restarted service"


# ------------------------------------------------------------------------------------------------------------------
# Garbage gets a typed rejection; the service keeps serving
# ------------------------------------------------------------------------------------------------------------------


def test_garbage_frames_get_typed_rejections_and_the_service_keeps_serving(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe()
    peer = RawPeer(zctx, cfg.bus.monitor)
    ping = _envelope({"type": "ping"}, request_id="ping-1")
    try:
        env = peer.reply([b"\x00\xffnot msgpack"])
        assert isinstance(env.body, m.Rejected) and env.body.code == "bad_request" and env.request_id == ""

        env = peer.reply([_envelope({"type": "place_order", "order": {
            "strategy_id": "s1", "client_order_id": "c1", "instrument": {"symbol": "AAPL"}, "side": "BUY",
            "quantity": float("nan")}}, request_id="nan-1")])
        assert env.request_id == "nan-1"
        assert env.body.code == "bad_request" and env.body.request_type == "place_order"
        assert "order.quantity" in env.body.reason

        env = peer.reply([_envelope({"type": "launch_rockets"}, request_id="unk-1")])
        assert (env.body.code, env.request_id) == ("unknown_command", "unk-1")

        env = peer.reply([_envelope({"type": "ping"}, sender=42)])  # wrong-typed header
        assert env.body.code == "bad_request"

        env = peer.reply([b""])
        assert env.body.code == "bad_request"

        frames = peer.call([b"", ping])  # a REQ-style delimiter: answered, routing frame echoed
        assert frames[0] == b"" and reply_codec().decode(frames[-1]).body.code == "bad_request"

        frames = peer.call([b"junk", b"more junk", b"\x93"])
        assert reply_codec().decode(frames[-1]).body.code == "bad_request"

        env = peer.reply([ping])
        assert isinstance(env.body, m.Pong) and env.request_id == "ping-1"
    finally:
        peer.close()
    assert probe.alive()
    assert probe_status(zctx, cfg.bus.monitor)["rejected_frames"] == "7"


def test_req_socket_gets_a_typed_rejection_instead_of_hanging(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    start_probe()
    peer = RawPeer(zctx, cfg.bus.monitor, kind=zmq.REQ)
    try:
        env = peer.reply([_envelope({"type": "ping"}, request_id="req-1")])
    finally:
        peer.close()
    assert env.body.code == "bad_request" and "DEALER" in env.body.reason and env.request_id == "req-1"


_fuzz_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=20),
              st.binary(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
_fuzz_bodies = st.fixed_dictionaries({"type": st.sampled_from(
    [m.tag_of(c) for c in (m.Ping, m.PlaceOrder, m.Kill, m.CancelScope, m.GetStatus)] + ["nope", ""])},
    optional={"order": _fuzz_values, "kill_id": _fuzz_values, "reason": _fuzz_values, "scope": _fuzz_values})
_fuzz_frames = st.one_of(
    st.binary(max_size=256),
    _fuzz_bodies.map(lambda body: _envelope(body)),
    st.dictionaries(st.sampled_from(["v", "sender", "request_id", "seq", "body"]), _fuzz_values, max_size=5)
    .map(msgspec.msgpack.encode),
)


def test_fuzzed_frames_into_a_live_service_always_get_an_answer(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    probe = start_probe()
    peer = RawPeer(zctx, cfg.bus.monitor)
    req = request_codec()
    # the probe's own requests that would change what later examples see
    harmless = (m.Ping, m.GetStatus, m.PlaceOrder, m.CancelScope, m.Kill)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frame=_fuzz_frames)
    def one(frame: bytes) -> None:
        try:
            valid = req.decode(frame)
        except DecodeError:
            valid = None
        env = peer.reply([frame])
        if valid is None:
            assert isinstance(env.body, m.Rejected) and env.body.code in ("bad_request", "unknown_command")
        else:
            assert isinstance(valid.body, harmless)
            assert isinstance(env.body, reqrep.REPLY_TYPES)

    try:
        one()
        assert isinstance(peer.reply([_envelope({"type": "ping"})]).body, m.Pong)
    finally:
        peer.close()
    assert probe.alive()


def test_handler_returning_a_non_reply_gets_an_internal_rejection(
        zctx: zmq.Context, cfg: KhazadConfig, start_probe: Callable[..., ActorProcess]) -> None:
    start_probe()
    cl = probe_client(zctx, cfg.bus.monitor, stamper=Stamper("bad-handler"), timeout_s=2.0)
    try:
        reply = cl.call(m.GetAccount())
        assert isinstance(reply, m.Rejected) and reply.code == "internal" and reply.request_type == "get_account"
        assert "not a reply" in reply.reason
        assert isinstance(cl.call(m.Ping()), m.Pong)
    finally:
        cl.close()


# ------------------------------------------------------------------------------------------------------------------
# De-duplication cache bounds (unit)
# ------------------------------------------------------------------------------------------------------------------


def test_dedup_cache_is_bounded_by_count_bytes_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(dedup.time, "monotonic", lambda: now[0])
    one = dedup.entry_bytes(("s", "0"), b"x")
    d = dedup.ReplyCache(capacity=3, ttl_s=10.0, max_bytes=4 * one)
    for i in range(5):
        d.remember(("s", str(i)), b"x")
    assert list(d.done) == [("s", "2"), ("s", "3"), ("s", "4")] and d.bytes == 3 * one
    d.remember(("s", "big"), b"y" * one)  # over the byte budget: the oldest go first
    assert d.bytes <= d.max_bytes and ("s", "big") in d.done
    now[0] += 11
    assert d.cached(("s", "big")) is None  # expired on lookup
    d.remember(("s", "new"), b"z")
    assert list(d.done) == [("s", "new")] and d.bytes == dedup.entry_bytes(("s", "new"), b"z")
