"""Request deadlines: a service does not start a request its caller has already given up on (a strategy that saw
a timeout must not find its order placed later), except the ones that only make things safer (kills, cancels)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import zmq

from bus import sockets
from bus.codec import Stamper, reply_codec, request_codec
from bus.messages import Ack, Kill, Ping, Pong, Rejected, WaitOrder
from bus.retry import DEADLINE_ALLOWANCE_S, RequestTimeout
from tests.support.clients import security, server_key
from tests.support.config import config_of_endpoint
from tests.support.programs import PROBE_KEY, PROBE_SERVICE, probe_client, probe_status

PAST_S = 5.0


def _raw_call(zctx: zmq.Context, endpoint: str, body, deadline_wall_ns: int):
    sock = sockets.configure(zctx.socket(zmq.DEALER))
    try:
        cfg = config_of_endpoint(endpoint)
        sec = security(cfg) if cfg is not None else None
        sockets.connect(sock, endpoint, security=sec, server_key=server_key(sec, PROBE_KEY))
        env = Stamper("test-deadline").stamp(body, request_id="rid-" + str(time.monotonic_ns()),
                                             deadline_wall_ns=deadline_wall_ns)
        sock.send(request_codec().encode(env))
        assert sock.poll(5000), "no reply"
        return reply_codec().decode(sock.recv_multipart()[-1]).body
    finally:
        sock.close(0)


def test_request_arriving_after_its_deadline_is_refused_expired_and_not_executed(start_probe, zctx, cfg):
    start_probe()
    endpoint = cfg.bus.service_endpoint(PROBE_SERVICE)
    past = time.time_ns() - int(PAST_S * 1e9)
    reply = _raw_call(zctx, endpoint, WaitOrder(strategy_id="s", client_order_id="late-1", timeout_s=0.01), past)
    assert isinstance(reply, Rejected) and reply.code == "expired" and "not executed" in reply.reason
    assert "executed:late-1" not in probe_status(zctx, endpoint)
    fresh = time.time_ns() + int(PAST_S * 1e9)
    reply = _raw_call(zctx, endpoint, WaitOrder(strategy_id="s", client_order_id="late-2", timeout_s=0.01), fresh)
    assert isinstance(reply, Ack) and reply.detail == "1"


def test_kill_arriving_after_its_deadline_still_runs(start_probe, zctx, cfg):
    start_probe()
    past = time.time_ns() - int(PAST_S * 1e9)
    reply = _raw_call(zctx, cfg.bus.service_endpoint(PROBE_SERVICE), Kill(kill_id="late-kill", reason="t"), past)
    assert reply == Ack(detail="1")


def test_call_that_timed_out_on_a_stopped_service_is_not_run_when_it_resumes(start_probe, zctx, cfg):
    probe = start_probe()
    endpoint = cfg.bus.service_endpoint(PROBE_SERVICE)
    client = probe_client(zctx, endpoint, stamper=Stamper("test-stale"), timeout_s=0.3, retries=0)
    try:
        assert isinstance(client.call(Ping(), timeout_s=5.0), Pong)  # connected: the request will reach the kernel
        probe.signal(signal.SIGSTOP)
        try:
            sent_wall = time.time_ns()
            with pytest.raises(RequestTimeout):
                client.call(WaitOrder(strategy_id="s", client_order_id="stale", timeout_s=0.01))
            # the condition under test is "older than the caller's deadline plus the clock allowance": let the wall
            # clock get there while the service is still stopped (a clock condition, not a wait on another process)
            stale_at = sent_wall + int((0.3 + DEADLINE_ALLOWANCE_S + 0.05) * 1e9)
            threading.Event().wait(max(0.0, (stale_at - time.time_ns()) / 1e9))
        finally:
            probe.signal(signal.SIGCONT)
        # same socket, same pipe: once the Ping is answered, the stale request ahead of it has been handled
        assert isinstance(client.call(Ping(), timeout_s=5.0), Pong)
    finally:
        client.close()
    assert "executed:stale" not in probe_status(zctx, endpoint)
