"""IB's order notices: codes and the texts IB sends with them.

``NOTICE_TEXT`` is also the default message of the control command
``order_notice`` (which sends any code for an order's id to its client
without changing the order).  Texts follow IB's message-code list and what
the client libraries' issue trackers quote from real Gateways.
"""

from __future__ import annotations

TIF_PRESET = 10349
OUTSIDE_RTH_IGNORED = 2109
ORDER_MESSAGE = 399
NOT_CANCELLABLE = 161
CANCEL_DONE_ORDER = 10148
AUTO_BIND_CLIENT_ZERO_ONLY = 327
MISSING_PARENT = 10006

NOTICE_TEXT: dict[int, str] = {
    103: "Duplicate order id",
    104: "Can't modify a filled order.",
    105: "Order being modified does not match original order.",
    110: "The price does not conform to the minimum price variation for this contract.",
    135: "Can't find order with id",
    161: "Cancel attempted when order is not in a cancellable state.",
    200: "No security definition has been found for the request",
    201: "Order rejected - reason:",
    202: "Order Canceled - reason:",
    399: "Order Message:\nWarning: your order will not be placed at the exchange until the market opens.",
    404: "Shares for this order are not immediately available for short sale. "
         "The order will be held while we attempt to locate the shares.",
    434: "The order size cannot be zero.",
    2109: 'Order Event Warning: Attribute "Outside Regular Trading Hours" is ignored based on the order '
          "type and destination. PlaceOrder is now processed.",
    2137: "The closing order quantity is greater than your current position.",
    10089: "Requested market data requires additional subscription for API.",
    10090: "Part of requested market data is not subscribed.",
    10147: "OrderId that needs to be cancelled is not found.",
    10148: "OrderId that needs to be cancelled can not be cancelled, state: Submitted.",
    10149: "Invalid order id.",
    10311: "This order will be directly routed to the exchange.",
    10349: "Order TIF was set to DAY based on order preset.",
}


def notice_text(code: int) -> str:
    return NOTICE_TEXT.get(code, f"Simulated notice {code}")


def not_cancellable(perm_id: int) -> str:
    return f"Cancel attempted when order is not in a cancellable state. Order permId ={perm_id}"


def cancel_done(order_id: int, status: str) -> str:
    return f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {status}."


def tif_preset(tif: str) -> str:
    return f"Order TIF was set to {tif} based on order preset."


def not_placed_until(description: str, opens: str) -> str:
    """IB's 399 for an order that waits for its session (as TWS words it)."""
    return f"Order Message:\n{description}\nWarning: your order will not be placed at the exchange until {opens}"
