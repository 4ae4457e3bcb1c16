"""Small helpers shared by the simulator's order tests (three clients, one scenario)."""

from __future__ import annotations

from typing import Any

#: What a client library logs when IB cancels or refuses an order (expected in these tests).
CANCEL_LOGS = (r"Error 202", r"Canceled order", r"IBKR API validation warning")


def last_status(client, h) -> str:
    s = client.statuses(h)
    return s[-1] if s else ""


def server_statuses(client, h) -> list[str]:
    """The statuses the server sent (without the ones the client library sets itself)."""
    return [s for s in client.statuses(h) if s not in client.local_statuses]


def barrier(client) -> None:
    """A completed round trip: everything the server sent earlier has arrived."""
    assert client.qualify("SPY") == 756733


def the_order(state: dict, ref: str) -> dict:
    [o] = [o for o in state["orders"].values() if o["orderRef"] == ref]
    return o


def codes_for(client, h) -> list[int]:
    """Error codes the client received for this order's id, in order."""
    return [e.code for e in client.errors() if e.req_id == h.order_id]


def wait_status(client, h, status: str, what: str = "") -> None:
    client.wait(lambda: last_status(client, h) == status, what=what or f"{h.symbol} {status}")


def bracket(client, symbol: str, action: str, qty: float, entry: float, take_profit: float,
            stop_loss: float, ref: str, last_transmits: bool = True, **entry_extra: Any) -> tuple:
    """IB's bracket: parent and take-profit held (transmit=False), the stop-loss transmits all three."""
    exit_action = "SELL" if action == "BUY" else "BUY"
    parent = client.place(symbol, action, qty, "LMT", lmt=entry, order_ref=f"{ref}-entry",
                          transmit=False, **entry_extra)
    tp = client.place(symbol, exit_action, qty, "LMT", lmt=take_profit, order_ref=f"{ref}-tp",
                      transmit=False, parentId=parent.order_id)
    sl = client.place(symbol, exit_action, qty, "STP", aux=stop_loss, order_ref=f"{ref}-sl",
                      transmit=last_transmits, parentId=parent.order_id)
    return parent, tp, sl


def position(state: dict, con_id: int) -> float:
    return sum(float(p["position"]) for p in state["positions"] if p["conId"] == con_id)


def saw_no_order_status(client, h) -> bool:
    """True when the server sent no orderStatus for this order (only an error).

    ib_insync and ib_async mark an order Cancelled themselves on an error code
    they count as fatal; such an entry carries the error code in the trade log.
    """
    if client.name == "ibapi":
        return client.statuses(h) == []
    return all(entry.errorCode for entry in h.native.log if entry.status not in client.local_statuses)
