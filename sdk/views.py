"""What the SDK reads from the order manager's :class:`~bus.messages.OrderView`: which statuses are a refusal
(raised as :class:`~sdk.errors.OrderRejected`) and a one-line history for logs."""

from __future__ import annotations

from bus.messages import OrderView
from sdk.errors import OrderRejected

#: Statuses that mean "the order was refused before it could work" (raised as :class:`OrderRejected`).
REJECTED_STATUSES = frozenset({"RiskRejected", "GatewayRejected"})


def raise_if_rejected(view: OrderView) -> None:
    """An order the order manager journalled but risk or the gateway refused is an error for the caller."""
    if view.status in REJECTED_STATUSES:
        code = "risk_rejected" if view.status == "RiskRejected" else "gateway_rejected"
        reason = view.reason or view.status
        prefix, sep, rest = view.reason.partition(":")
        if sep and prefix and " " not in prefix.strip():
            # the order manager journals "<code>: <reason>" (e.g. "risk.max_quantity: 500 > 100")
            code, reason = prefix.strip(), rest.strip() or reason
        raise OrderRejected(code, reason, request_type="place_order", order=view)


def format_history(view: OrderView) -> str:
    """``PendingSubmit -> PreSubmitted -> Submitted -> Filled`` (for logs)."""
    return " -> ".join(step.status for step in view.history) or view.status
