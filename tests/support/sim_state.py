"""Reading the TWS simulator's ground truth in tests (its control API ``state``: orders, executions, the request
log, quotes, positions), and a raw TWS session that takes a client id (what a lingering session looks like)."""

from __future__ import annotations

import socket
from typing import Any

from sim.protocol import FrameDecoder, build_client_handshake, build_start_api, split_fields

#: Order statuses at the simulator that mean "still working" (IB's meaning; Inactive is a rejection there),
#: pending ones included.
SIM_WORKING = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})
#: Statuses of an order the simulator has accepted and that still works (what a kill must leave none of).
WORKING_AT_SIM = ("PreSubmitted", "Submitted", "PendingCancel")


def sim_orders(state: dict) -> list[dict]:
    return list(state["orders"].values())


def sim_order(state: dict, order_ref: str) -> dict | None:
    return next((o for o in sim_orders(state) if o["orderRef"] == order_ref), None)


def working_at_sim(state: dict) -> list[dict]:
    return [o for o in sim_orders(state) if o["status"] in WORKING_AT_SIM]


def requests_named(state: dict, name: str) -> list[dict]:
    return [r for r in state["request_log"] if r["name"] == name]


def market_price(sim: Any, symbol: str = "AAPL") -> float:
    """The simulator's mid price for ``symbol`` (rounded to the cent)."""
    quote = sim.state()["quotes"][symbol]
    return round((quote["bid"] + quote["ask"]) / 2, 2)


def sim_position(sim: Any, symbol: str = "AAPL") -> float:
    return sum(p["position"] for p in sim.state()["positions"] if p["symbol"] == symbol)


def squat(port: int, client_id: int) -> socket.socket:
    """Take a client id with a raw TWS connection (what a lingering session after a restart looks like)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(build_client_handshake(157, 176))
    dec = FrameDecoder(expect_prefix=False)
    frames: list[bytes] = []
    while not frames:
        frames += dec.feed(s.recv(4096))
    s.sendall(build_start_api(client_id))
    while not any(split_fields(f)[0] == "9" for f in frames[1:]):
        frames += dec.feed(s.recv(4096))
    return s
