"""The SDK's errors, one rule everywhere (see :mod:`sdk`): a refusal raises :class:`OrderRejected`, an order that
did not reach the wanted stage in time raises :class:`OrderWaitTimeout`, no reply at all raises
:class:`bus.reqrep.RequestTimeout` (re-exported here), a reply of the wrong type raises :class:`UnexpectedReply`."""

from __future__ import annotations

from bus.messages import GroupView, OrderView
from bus.retry import RequestTimeout

__all__ = ["KhazadClientError", "OrderRejected", "OrderWaitTimeout", "UnexpectedReply", "RequestTimeout"]


class KhazadClientError(Exception):
    """Base of the SDK's own errors (``RequestTimeout`` comes from :mod:`bus.reqrep`)."""


class OrderRejected(KhazadClientError):
    """A service refused the request (``Rejected`` reply) or the order was rejected by risk or the gateway.

    ``code`` is machine-readable (``halted``, ``disconnected``, ``not_found``, ``bad_request``, ``risk.<check>``,
    ``risk_rejected``, ``gateway_rejected``...); ``reason`` is for humans; ``order`` is the order manager's view
    when the order exists (a risk-rejected order is journalled), else None.
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        request_type: str = "",
        order: OrderView | None = None,
        group: GroupView | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        self.reason = reason
        self.request_type = request_type
        self.order = order
        #: an order group refused as a whole: its view (every member journalled as rejected)
        self.group = group


class OrderWaitTimeout(KhazadClientError, TimeoutError):
    """:meth:`AsyncKhazadClient.wait_for_order` ran out of time; ``order`` is the last view (None if unknown)."""

    def __init__(self, client_order_id: str, until: str, timeout_s: float, order: OrderView | None) -> None:
        status = order.status if order is not None else "unknown"
        super().__init__(f"order {client_order_id} not {until} after {timeout_s:g}s (status {status})")
        self.client_order_id = client_order_id
        self.until = until
        self.timeout_s = timeout_s
        self.order = order


class UnexpectedReply(KhazadClientError):
    """A service answered with a reply type the SDK does not expect for that request (a version mismatch)."""
