"""Issue 14, item 4 (the service side): each caller has its own in-flight limit, the shared pool still bounds the
total, and a request over a limit gets a typed ``Rejected(busy)`` at once; status probes pass a full pool.

The probe actor (``tests/bus/probe_actor.py``: its ``WaitOrder`` is slow work that holds a request slot) as a real
process, with small limits from the environment; callers are separate DEALER connections.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import zmq

from bus.codec import Stamper, request_codec
from bus.messages import Ack, Ping, Pong, Rejected, WaitOrder
from tests.bus.conftest import probe_factory  # noqa: F401 (fixture)
from tests.security.chain import RawDealer
from tests.support.processes import ActorProcess
from tests.support.programs import PROBE_KEY, PROBE_SERVICE, probe_status
from tests.support.waiting import eventually

PER_CALLER = 20
POOL = 50
LIMITS_ENV = {"KHAZAD__BUS__MAX_INFLIGHT_PER_CALLER": str(PER_CALLER), "KHAZAD__BUS__MAX_INFLIGHT": str(POOL)}
SLOW_S = 4.0
PROMPT_S = 2.0


#: Each caller is one key (a service counts callers by their authenticated key): strategy keys of the test config.
CALLER_KEYS = {"a": "alpha", "b": "beta", "c": "other"}


def _caller(zctx: zmq.Context, endpoint: str, tag: str) -> RawDealer:
    return RawDealer(zctx, endpoint, key=CALLER_KEYS[tag], server=PROBE_KEY)


def _slow(n: int, tag: str) -> list[bytes]:
    codec, stamper = request_codec(), Stamper(f"caller-{tag}")
    deadline = time.time_ns() + int(30e9)
    sid = CALLER_KEYS[tag]  # a strategy key acts for its own strategy id only
    return [codec.encode(stamper.stamp(WaitOrder(strategy_id=sid, client_order_id=f"{tag}-{i}", timeout_s=SLOW_S),
                                       request_id=uuid.uuid4().hex, deadline_wall_ns=deadline)) for i in range(n)]


def _in_flight(status: dict[str, str]) -> int:
    """Requests in flight at the probe (``requests`` = ``<in flight>/<pool>``; 0 on a service that has no such
    detail)."""
    return int(status.get("requests", "0/0").split("/")[0])


def _collect(dealer: RawDealer, n: int, timeout_s: float) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and (left := deadline - time.monotonic()) > 0:
        env = dealer.recv(left)
        if env is not None:
            got.append(env.body)
    return got


def test_a_caller_over_its_own_limit_gets_busy_at_once_and_another_caller_is_served(
        proxy: ActorProcess, probe_factory: Callable[..., ActorProcess], zctx: zmq.Context, cfg: Any) -> None:
    probe_factory(env=LIMITS_ENV)
    endpoint = cfg.bus.service_endpoint(PROBE_SERVICE)
    flooder, other = _caller(zctx, endpoint, "a"), _caller(zctx, endpoint, "b")
    try:
        for frame in _slow(PER_CALLER + 10, "a"):
            flooder.send(frame)
        t0 = time.monotonic()
        refused = _collect(flooder, 10, PROMPT_S)
        assert len(refused) == 10 and time.monotonic() - t0 < PROMPT_S, refused
        assert all(isinstance(r, Rejected) and r.code == "busy" and "caller" in r.reason for r in refused), refused
        # another caller: its slow request is taken (not refused) and its Ping answered at once
        other.send(_slow(1, "b")[0])
        other.send(request_codec().encode(Stamper("caller-b").stamp(Ping(), request_id=uuid.uuid4().hex)))
        first = _collect(other, 1, PROMPT_S)
        assert first and isinstance(first[0], Pong), first
        later = _collect(other, 1, SLOW_S + 5)
        assert later and isinstance(later[0], Ack), later
        rest = _collect(flooder, PER_CALLER, SLOW_S + 5)
        assert len(rest) == PER_CALLER and all(isinstance(r, Ack) for r in rest), rest
    finally:
        flooder.close()
        other.close()


def test_the_shared_pool_bounds_all_callers_together_and_status_probes_pass_a_full_pool(
        proxy: ActorProcess, probe_factory: Callable[..., ActorProcess], zctx: zmq.Context, cfg: Any) -> None:
    probe_factory(env=LIMITS_ENV)
    endpoint = cfg.bus.service_endpoint(PROBE_SERVICE)
    callers = [_caller(zctx, endpoint, tag) for tag in "abc"]
    try:
        for tag, dealer in zip("abc", callers[:2], strict=False):
            for frame in _slow(PER_CALLER, tag):
                dealer.send(frame)
        eventually(lambda: _in_flight(probe_status(zctx, endpoint)) >= 2 * PER_CALLER,
                   message=lambda: f"two callers at their limit: {probe_status(zctx, endpoint)}")
        third = callers[2]
        for frame in _slow(PER_CALLER, "c"):
            third.send(frame)
        refused = _collect(third, PER_CALLER - (POOL - 2 * PER_CALLER), PROMPT_S)
        assert refused and all(isinstance(r, Rejected) and r.code == "busy" and "service" in r.reason
                               for r in refused), refused
        status = probe_status(zctx, endpoint)  # a status probe is admitted past the full pool (and counts itself)
        assert _in_flight(status) == POOL + 1 and "saturated" in status, status
    finally:
        for dealer in callers:
            dealer.close()


def test_a_retry_of_a_request_refused_busy_gets_busy_again_and_never_runs_later(
        proxy: ActorProcess, probe_factory: Callable[..., ActorProcess], zctx: zmq.Context, cfg: Any) -> None:
    """Issue 18: ``busy`` means "not done". A client's transport retry (the same request id) sent before the refusal
    reached it must not be admitted once the slots free up: its caller was already told the request was refused."""
    probe_factory(env=LIMITS_ENV)
    endpoint = cfg.bus.service_endpoint(PROBE_SERVICE)
    flooder = _caller(zctx, endpoint, "a")
    codec, stamper = request_codec(), Stamper("caller-a")
    deadline = time.time_ns() + int(30e9)
    held = [codec.encode(stamper.stamp(WaitOrder(strategy_id="alpha", client_order_id=f"held-{i}", timeout_s=1.0),
                                       request_id=uuid.uuid4().hex, deadline_wall_ns=deadline))
            for i in range(PER_CALLER)]
    extra = codec.encode(stamper.stamp(WaitOrder(strategy_id="alpha", client_order_id="extra", timeout_s=1.0),
                                       request_id=uuid.uuid4().hex, deadline_wall_ns=deadline))
    try:
        for frame in [*held, extra]:
            flooder.send(frame)
        refused = _collect(flooder, 1, PROMPT_S)
        assert refused and isinstance(refused[0], Rejected) and refused[0].code == "busy", refused
        done = _collect(flooder, PER_CALLER, SLOW_S + 5)  # the held requests finish: the caller's slots are free
        assert len(done) == PER_CALLER and all(isinstance(r, Ack) for r in done), done
        flooder.send(extra)  # the same request again (same request id): a retry of the refused one
        again = _collect(flooder, 1, PROMPT_S)
        assert again and isinstance(again[0], Rejected) and again[0].code == "busy", again
        # and a new request (a new id) is served: the slots really are free
        flooder.send(codec.encode(stamper.stamp(Ping(), request_id=uuid.uuid4().hex)))
        assert isinstance(_collect(flooder, 1, PROMPT_S)[0], Pong)
    finally:
        flooder.close()
