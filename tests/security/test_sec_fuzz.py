"""Issue 14, item 10: hypothesis fuzzing of every request type on every service, with random field sizes.

The real actors as real processes, started once for the module (proxy, gateway on the simulator, risk governor,
order manager, portfolio, monitor). Each request is generated from the msgspec types themselves
(:mod:`tests.security.fuzz`: valid values from each field's pattern and range, strings of any length up to twice
their bound, numbers out of range, lists one past their bound, wrong literals, random ``sender`` sizes) and sent
over a real DEALER, one at a time. Every request must get exactly one typed reply (a reply message or a
``Rejected``: never silence), the actor must stay alive, and its memory must stay bounded.

Deterministic (``derandomize``: the same examples on every run) and modest: :data:`EXAMPLES` per request type and
service, about a minute in all. One field is tamed: a ``WaitOrder``'s ``timeout_s`` is capped at
:data:`WAIT_CAP_S` (a valid wait of up to 300 s would only make the run long; its bound is checked by the schema).
"""

from __future__ import annotations

import time
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import messages as m
from bus import registry
from bus.codec import reply_codec
from bus.security import OPERATOR_KEY
from tests.security import fuzz
from tests.security.chain import Chain, RawDealer, answers_ping, rss_bytes, running_chain

SERVICES = ("gateway", "risk", "orders", "portfolio", "monitor")
REQUEST_TYPES = typing.get_args(m.Request)
EXAMPLES = 40
WAIT_CAP_S = 1.0
#: The slowest legitimate answer a fuzzed request can get (a kill verifies at the simulator, a subscription asks
#: IB for the contract): generous for a loaded 2-core machine.
REPLY_TIMEOUT_S = 20.0
MEMORY_BOUND_BYTES = 10 * 1024 * 1024
_ENCODER = msgspec.msgpack.Encoder()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with running_chain(tmp_path_factory.mktemp("sec-fuzz"), SERVICES, client_id=35) as c:
        c.rest_rss = {name: rss_bytes(c.procs[name].pid) for name in SERVICES}  # type: ignore[attr-defined]
        c.dealers = {}  # type: ignore[attr-defined]
        c.outcomes = {}  # type: ignore[attr-defined]
        try:
            yield c
        finally:
            for dealer in c.dealers.values():  # type: ignore[attr-defined]
                dealer.close()


#: Sent with the order manager's key (only it may send them: with any other key the handler is never reached);
#: every other request type with the operator's, who may send all of them.
ORDER_ENTRY = (m.CheckOrder, m.SubmitOrder, m.AmendOrder)


def _dealer(chain: Chain, service: str, cls: type) -> RawDealer:
    key = registry.ORDERS.name if cls in ORDER_ENTRY else OPERATOR_KEY
    dealers: dict[tuple[str, str], RawDealer] = chain.dealers  # type: ignore[attr-defined]
    if (service, key) not in dealers:
        dealers[service, key] = RawDealer(chain.ctx, chain.cfg.bus.service_endpoint(service), key=key)
    return dealers[service, key]


def _tame(body: Any) -> Any:
    if isinstance(body, dict) and body.get("type") == "wait_order":
        t = body.get("timeout_s")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and t == t and t > WAIT_CAP_S:
            body["timeout_s"] = WAIT_CAP_S
    return body


def _envelopes(cls: type) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    sender = st.one_of(st.just("fuzz"), st.integers(min_value=0, max_value=2 * m.MAX_SENDER_LENGTH).map(
        lambda n: "f" * n))

    def build(a: tuple[Any, str]) -> tuple[dict[str, Any], str]:
        body, who = a
        rid = uuid.uuid4().hex
        env = {"v": m.SCHEMA_VERSION, "sender": who, "incarnation": 1, "seq": 1, "mono_ns": time.monotonic_ns(),
               "wall_ns": time.time_ns(), "request_id": rid,
               "deadline_wall_ns": time.time_ns() + int(2 * REPLY_TIMEOUT_S * 1e9), "body": _tame(body)}
        return env, rid

    return st.tuples(fuzz.message_strategy(cls), sender).map(build)


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_always_get_one_typed_reply_and_the_actor_lives(chain: Chain, service: str,
                                                                        cls: type) -> None:
    dealer = _dealer(chain, service, cls)
    proc = chain.procs[service]
    replies = reply_codec()

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_envelopes(cls))
    def one(example: tuple[dict[str, Any], str]) -> None:
        env, rid = example
        dealer.send(_ENCODER.encode(env), timeout_s=REPLY_TIMEOUT_S)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{service}: no reply to {env['body'].get('type')} within {REPLY_TIMEOUT_S:g}s"
            if not dealer.sock.poll(int(min(left, 0.5) * 1000)):
                assert proc.alive(), f"{service} died:\n{proc.log()[-3000:]}"
                continue
            reply = replies.decode(dealer.sock.recv_multipart()[-1])  # typed, or DecodeError fails the test
            if reply.request_id == rid:
                break
        assert isinstance(reply.body, typing.get_args(m.Reply)), reply
        assert proc.alive(), f"{service} died:\n{proc.log()[-3000:]}"
        body = reply.body
        kind = f"rejected:{body.code}" if isinstance(body, m.Rejected) else m.tag_of(type(body))
        outcomes: dict[str, int] = chain.outcomes.setdefault(service, {})  # type: ignore[attr-defined]
        outcomes[kind] = outcomes.get(kind, 0) + 1

    one()


@pytest.mark.parametrize("service", SERVICES)
def test_after_the_fuzzing_every_actor_answers_and_its_memory_stayed_bounded(chain: Chain, service: str) -> None:
    proc = chain.procs[service]
    assert proc.alive(), proc.log()[-3000:]
    assert answers_ping(chain.ctx, chain.cfg.bus.service_endpoint(service), 10.0)
    grown = rss_bytes(proc.pid) - chain.rest_rss[service]  # type: ignore[attr-defined]
    print(f"{service}: RSS +{grown / 1e6:.1f} MB; replies {chain.outcomes.get(service)}")  # type: ignore[attr-defined]
    assert grown < MEMORY_BOUND_BYTES, f"{service} grew {grown / 1e6:.1f} MB during the fuzzing"
