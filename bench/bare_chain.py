"""Bare chain: the order path's three request/reply hops with no work, to show how close the actors are to the
transport's floor.

Khazad's hops: strategy -> order manager (journal) -> risk governor (checks, signed approval) -> order manager
(journal) -> gateway (verify, ib_insync placeOrder) -> order manager -> strategy, i.e. the SDK's ``place_order``
until its ``OrderReply`` (one order in flight; measured in the order-entry system, see
:meth:`bench.order_entry.KhazadPath.sequential`).

The bare chain: the same topology in raw pyzmq, each process a blocking DEALER/ROUTER loop doing nothing but
forwarding: client -> bare orders -> bare risk -> bare orders -> bare gateway -> bare orders -> client, with
payloads of exactly the byte sizes of the real envelopes (PlaceOrder, CheckOrder, RiskDecision with an approval,
SubmitOrder, SubmitAck, OrderReply).
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Child, free_ports, summary_ms

WARMUP = 200


def payload_sizes() -> dict[str, int]:
    """Byte sizes of the real envelopes of one order's hops."""
    from bench.harness import FAR_LIMIT, SYMBOL
    from bus.approval import sign
    from bus.codec import Stamper, reply_codec, request_codec
    from bus.messages import (
        CheckOrder,
        Instrument,
        OrderReply,
        OrderSpec,
        OrderView,
        PlaceOrder,
        RiskDecision,
        SubmitAck,
        SubmitOrder,
    )
    from bus.retry import new_request_id

    spec = OrderSpec(strategy_id="bench", client_order_id="0123abcd-s1234", instrument=Instrument(symbol=SYMBOL),
                     side="BUY", quantity=1, order_type="LMT", limit_price=FAR_LIMIT)
    approval = sign(b"k" * 32, spec, ttl_s=5)
    st = Stamper("strategy.bench")
    rq, rp = request_codec(), reply_codec()

    def req(body: Any) -> int:
        return len(rq.encode(st.stamp(body, request_id=new_request_id())))

    def rep(body: Any) -> int:
        return len(rp.encode(st.stamp(body, request_id=new_request_id())))

    view = OrderView(spec=spec, status="PreSubmitted", remaining=1, ib_order_id=1234, is_live=True,
                     created_wall_ns=time.time_ns(), updated_wall_ns=time.time_ns())
    return {"place": req(PlaceOrder(order=spec)), "check": req(CheckOrder(order=spec)),
            "decision": rep(RiskDecision(approved=True, code="ok", approval=approval)),
            "submit": req(SubmitOrder(order=spec, approval=approval)),
            "ack": rep(SubmitAck(order_ref=spec.order_ref, ib_order_id=1234, perm_id=1000000001)),
            "reply": rep(OrderReply(order=view))}


def raw_round_trips(endpoint: str, payload: bytes, n: int, warmup: int, what: str) -> list[int]:
    """Nanoseconds per round trip of a blocking raw pyzmq DEALER to ``endpoint``: ``warmup`` untimed, then ``n``
    timed, one in flight. ``what`` names the peer in the error when it does not answer."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        samples: list[int] = []
        for i in range(warmup + n):
            t0 = time.monotonic_ns()
            sock.send(payload)
            if not sock.poll(10_000):
                raise TimeoutError(f"{what} did not answer")
            sock.recv()
            if i >= warmup:
                samples.append(time.monotonic_ns() - t0)
        return samples
    finally:
        sock.close(0)
        ctx.term()


def run_bare_chain(n: int) -> dict[str, Any]:
    sizes = payload_sizes()
    p_orders, p_risk, p_gw = free_ports(3)
    ep = {k: f"tcp://127.0.0.1:{p}" for k, p in (("orders", p_orders), ("risk", p_risk), ("gateway", p_gw))}
    children = [Child("bare-echo", "--endpoint", ep["risk"], "--reply-bytes", str(sizes["decision"])),
                Child("bare-echo", "--endpoint", ep["gateway"], "--reply-bytes", str(sizes["ack"])),
                Child("bare-orders", "--endpoint", ep["orders"], "--risk", ep["risk"], "--gateway", ep["gateway"],
                      "--check-bytes", str(sizes["check"]), "--submit-bytes", str(sizes["submit"]),
                      "--reply-bytes", str(sizes["reply"]))]
    try:
        for c in children:
            c.expect("ready")
        samples = raw_round_trips(ep["orders"], b"p" * sizes["place"], n, WARMUP, "bare chain")
    finally:
        for c in children:
            c.stop()
    return {"payload_bytes": sizes, "round_trip": summary_ms(samples)}
