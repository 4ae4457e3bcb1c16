"""IB's error and notice codes that can concern an order, and what each one does to it: one explicit table.

IB reports an order's state in its orderStatus, openOrder and completedOrder messages. An error code about an order
is a notice *about* a request or the order, not a state: 10349 ("TIF set to DAY based on order preset") comes for
an order that works and fills, 161 for a cancel IB did not carry out, 110 for a price IB refused. The client
libraries guess a state from the code (ib_insync marks the trade Cancelled for any code outside a small warning
set); the gateway never takes that guess (``actors/gateway/ib.py`` keeps the library from making it). What a code
does is read here, from :data:`NOTICES`, and nowhere else.

The effect depends on what the order is doing when the code arrives (:func:`context_of`), in this precedence:

* ``amending``: an amendment was sent and IB has neither confirmed its terms (openOrder) nor refused it;
* ``new``: IB has not acknowledged the order yet (no orderStatus or openOrder for it): a placement;
* ``cancelling``: a cancel was sent and IB has not reported the order done;
* ``working``: none of these (a notice IB sends on its own).

Effects (:data:`bus.messages.NoticeEffect`):

* ``info``: the order is unchanged; the notice is logged and published on the order's event stream;
* ``rejected``: final, with IB's code and reason (the order is reported Cancelled with them);
* ``cancel_refused``: the cancel failed; the order is whatever IB says;
* ``amend_rejected``: the amendment failed; the terms IB last reported stand;
* ``unknown``: the state is unchanged, and the gateway asks IB again (open orders, completed orders, executions).

A code missing from the table is ``unknown`` in every context: never final. The table is also in docs/gateway.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bus.messages import NoticeEffect

INFO: Final = "info"
REJECTED: Final = "rejected"
CANCEL_REFUSED: Final = "cancel_refused"
AMEND_REJECTED: Final = "amend_rejected"
UNKNOWN: Final = "unknown"

NEW: Final = "new"
WORKING: Final = "working"
AMENDING: Final = "amending"
CANCELLING: Final = "cancelling"
CONTEXTS: Final = (NEW, WORKING, AMENDING, CANCELLING)

#: IB's "Order Canceled - reason: ..." that comes with (or just before or after) an orderStatus Cancelled: its text
#: is the cause of a cancel nobody at Khazad asked for.
ORDER_CANCELLED: Final = 202


@dataclass(frozen=True, slots=True)
class NoticeRule:
    """One row: what ``code`` means and its effect in each context."""

    code: int
    meaning: str
    new: NoticeEffect
    working: NoticeEffect
    amending: NoticeEffect
    cancelling: NoticeEffect

    def effect(self, context: str) -> NoticeEffect:
        effect: NoticeEffect = getattr(self, context)
        return effect


def _rows(*rows: tuple[int, str, NoticeEffect, NoticeEffect, NoticeEffect, NoticeEffect]) -> dict[int, NoticeRule]:
    table: dict[int, NoticeRule] = {}
    for code, meaning, new, working, amending, cancelling in rows:
        if code in table:
            raise ValueError(f"IB code {code} is in the notice table twice")
        table[code] = NoticeRule(code, meaning, new, working, amending, cancelling)
    return table


_I: NoticeEffect = INFO
_R: NoticeEffect = REJECTED
_CR: NoticeEffect = CANCEL_REFUSED
_AR: NoticeEffect = AMEND_REJECTED
_U: NoticeEffect = UNKNOWN

#: code -> rule. Columns: new, working, amending, cancelling (see the module docstring).
NOTICES: Final[dict[int, NoticeRule]] = _rows(
    # -- refusals of a request: a placement refused is final, an amendment refused leaves the order as it was;
    #    the same code on an order with nothing pending is not something IB sends on its own: ask IB
    (103, "duplicate order id: the new order is not accepted, the existing one is untouched", _R, _U, _AR, _U),
    (104, "can't modify a filled order", _U, _U, _AR, _U),
    (105, "order being modified does not match the original order", _U, _U, _AR, _U),
    (110, "price does not conform to the minimum price variation", _R, _U, _AR, _U),
    (111, "time in force not valid for this order type", _R, _U, _AR, _U),
    (113, "time in force must be DAY for this order type", _R, _U, _AR, _U),
    (135, "can't find order with id", _U, _U, _AR, _CR),
    (163, "TWS precaution: price too far from the market (percentage)", _R, _U, _AR, _U),
    (200, "no security definition for the contract", _R, _U, _AR, _U),
    (201, "order rejected", _R, _U, _AR, _U),
    (321, "error validating request", _R, _U, _AR, _U),
    (334, "invalid good-till date", _R, _U, _AR, _U),
    (383, "TWS precaution: size limit", _R, _U, _AR, _U),
    (387, "unsupported order type for this exchange and security type", _R, _U, _AR, _U),
    (434, "the order size cannot be zero", _R, _U, _AR, _U),
    (439, "algo strategy not supported", _R, _U, _AR, _U),
    (441, "invalid algo attribute (priority)", _R, _U, _AR, _U),
    (443, "invalid algo attribute", _R, _U, _AR, _U),
    (451, "TWS precaution: total value limit", _R, _U, _AR, _U),
    (10006, "missing parent order", _R, _U, _AR, _U),
    (10149, "invalid order id", _R, _U, _AR, _CR),
    (10245, "instrument does not support fractional shares", _R, _U, _AR, _U),
    # -- a cancel IB did not carry out: the order is whatever IB's status says
    (161, "cancel attempted when the order is not in a cancellable state", _CR, _CR, _CR, _CR),
    (10148, "order cannot be cancelled (filled or already done)", _CR, _CR, _CR, _CR),
    # a cancel of an order IB does not know: our record says otherwise, so ask IB
    (10147, "order to cancel not found", _U, _U, _U, _U),
    # -- IB's cancel notice: the Cancelled comes as IB's orderStatus; the text is the cause when nobody here asked
    (ORDER_CANCELLED, "order cancelled (with IB's reason)", _I, _I, _I, _I),
    # -- warnings: the order works
    (399, "order message warning (e.g. held until the session opens, odd lot)", _I, _I, _I, _I),
    (404, "shares not available for short sale: the order is held while IB locates them", _I, _I, _I, _I),
    (2109, "outside-regular-trading-hours attribute ignored; the order is processed", _I, _I, _I, _I),
    (2137, "closing quantity greater than the current position (cross-side warning)", _I, _I, _I, _I),
    (10311, "precautionary setting: the order is routed directly to the exchange", _I, _I, _I, _I),
    (10349, "TIF set by the order preset", _I, _I, _I, _I),
    # -- market data, if IB ever names an order's id with them: the order is not concerned
    (162, "historical market data service error", _I, _I, _I, _I),
    (354, "market data not subscribed", _I, _I, _I, _I),
    (10089, "market data requires an additional subscription", _I, _I, _I, _I),
    (10090, "part of the market data is not subscribed", _I, _I, _I, _I),
    (10167, "displaying delayed market data", _I, _I, _I, _I),
    (10168, "market data not subscribed, delayed data not enabled", _I, _I, _I, _I),
)


def context_of(*, acknowledged: bool, amending: bool, cancelling: bool) -> str:
    """What the order is doing (see the module docstring for the precedence)."""
    if amending:
        return AMENDING
    if not acknowledged:
        return NEW
    if cancelling:
        return CANCELLING
    return WORKING


def effect_of(code: int, context: str) -> NoticeEffect:
    """The effect of IB ``code`` on an order in ``context``; ``unknown`` for a code not in the table."""
    rule = NOTICES.get(code)
    return rule.effect(context) if rule is not None else UNKNOWN


def meaning_of(code: int) -> str:
    rule = NOTICES.get(code)
    return rule.meaning if rule is not None else "not in Khazad's notice table"
