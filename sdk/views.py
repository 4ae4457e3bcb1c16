"""What the SDK reads from the order manager's :class:`~bus.messages.OrderView`: which statuses are a refusal
(raised as :class:`~sdk.errors.OrderRejected`), why a finished order finished, IB's notices in its history, and a
one-line history for logs.

Every final status says why in ``view.reason`` (and ``view.error_code`` when IB gave a code):

* a rejection: IB's text and code (``error_code`` 201, 110, ...), or ``<code>: <reason>`` for a refusal by risk or
  the gateway (RiskRejected / GatewayRejected);
* a cancel: ``strategy: <reason>`` (the strategy's own request), ``kill <kill_id>: <reason>``,
  ``breaker <command_id>: <reason>`` (the risk governor's emergency cancel), ``cancel scope <scope>: <reason>``,
  ``reconnect: ...`` (the gateway's clean-up after a reconnect), or IB's own text with ``error_code`` 202.
"""

from __future__ import annotations

from bus.messages import OrderView, StatusChange
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


#: The causes a Cancelled order's reason can start with (see the module docstring).
CANCEL_CAUSES = ("strategy", "kill", "breaker", "cancel scope", "reconnect")
#: ``error_code`` of IB's own cancel ("Order Canceled - reason: ...").
IB_CANCEL_CODE = 202


def cancel_cause(view: OrderView) -> str:
    """Who cancelled a Cancelled order: one of :data:`CANCEL_CAUSES`, ``ib`` (IB's 202), ``rejected`` (IB refused
    it with another code), or ``""`` when not known (or not cancelled)."""
    if view.status not in ("Cancelled", "ApiCancelled"):
        return ""
    if view.error_code == IB_CANCEL_CODE:
        return "ib"
    if view.error_code is not None:
        return "rejected"
    for cause in CANCEL_CAUSES:
        if view.reason.startswith(cause + " ") or view.reason.startswith(cause + ":"):
            return cause
    return ""


def ib_notices(view: OrderView) -> list[StatusChange]:
    """IB's notices about the order (codes like 10349, 399, 161), in the order they came: history steps that carry
    an IB code without being a status change."""
    out: list[StatusChange] = []
    for step in view.history:
        if step.error_code is not None and step.reason.startswith(f"IB {step.error_code} ("):
            out.append(step)
    return out
