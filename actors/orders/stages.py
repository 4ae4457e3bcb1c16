"""Where an order is in the order manager's own pipeline (its *stage*), and the table of legal stage changes.

The stage is ours, not IB's (IB's statuses have their own table in :mod:`~actors.orders.lifecycle`). It is
journalled with the order and with every event that changes the order. Every stage change goes through
:data:`STAGE_TRANSITIONS` (``ManagedOrder.move_to``); anything not listed is a bug in the order manager and raises
:class:`IllegalStageChange`.

The placement pipeline (:mod:`~actors.orders.pipeline`)::

    received ──► approved ──► submitting ──► acked      (SubmitAck, or any report from IB)
       │            │             ├────────► unknown    (no answer) ──► acked | interrupted
       │            │             └────────► closed     (the gateway refused it)
       │            └──────────────────────► closed     (a cancel came during the risk check)
       └───────────────────────────────────► closed     (risk refused it, or a cancel before the check)

    after a restart, never acknowledged and not at IB:  received | approved | submitting | unknown ──► interrupted
    interrupted ──► received (the strategy retried: resumed) | closed (orphan timeout, or cancelled)

IB's word wins over ours: an order IB reports (a status or a fill) is ``acked``, whatever stage it was in.
``acked`` is final for the pipeline: from then on only IB's statuses move the order.
"""

from __future__ import annotations

from loguru import logger


class Stage:
    """The stages (see the module docstring).

    ``received`` journalled, risk not answered; ``approved`` risk approved, not yet sent; ``submitting`` SubmitOrder
    sent, no reply; ``unknown`` the gateway did not answer (the order may or may not be at IB); ``acked`` IB knows
    the order (SubmitAck or any event from IB); ``interrupted`` found after a restart, never acknowledged and not at
    IB: waits for the strategy to retry the same client_order_id or for the orphan timeout; ``closed`` finished
    before reaching IB (rejected or cancelled locally)."""

    RECEIVED = "received"
    APPROVED = "approved"
    SUBMITTING = "submitting"
    UNKNOWN = "unknown"
    ACKED = "acked"
    INTERRUPTED = "interrupted"
    CLOSED = "closed"

    #: not known to be at IB yet, but may be: resolved by events or the gateway's snapshot
    UNRESOLVED = frozenset({RECEIVED, APPROVED, SUBMITTING, UNKNOWN, INTERRUPTED})
    #: entering one of these means SubmitOrder has been sent at least once: the order may be at IB from then on
    SENT = frozenset({SUBMITTING, UNKNOWN, ACKED})


#: Every legal stage change ``from -> {to}``. Staying in a stage is not a change. Anything else raises.
STAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    # the risk governor answered (approved or refused); a cancel before the check; IB reports an earlier attempt
    # of a resumed order; after a restart, not at IB
    Stage.RECEIVED: frozenset({Stage.APPROVED, Stage.CLOSED, Stage.ACKED, Stage.INTERRUPTED}),
    # approved and submitting are written in one durable commit; a cancel that arrived during the risk check
    # closes it instead, in a second commit: a crash between the two leaves it approved in the journal, and after
    # the restart it is at IB (an earlier attempt of a resumed order) or it is not
    Stage.APPROVED: frozenset({Stage.SUBMITTING, Stage.CLOSED, Stage.ACKED, Stage.INTERRUPTED}),
    # the gateway's answer (ack, refusal, none); after a restart, not at IB
    Stage.SUBMITTING: frozenset({Stage.ACKED, Stage.UNKNOWN, Stage.CLOSED, Stage.INTERRUPTED}),
    # resolved by IB's events or the snapshot: found, or not at IB
    Stage.UNKNOWN: frozenset({Stage.ACKED, Stage.INTERRUPTED}),
    # resumed by the strategy's retry; expired or cancelled; or IB reports it after all
    Stage.INTERRUPTED: frozenset({Stage.RECEIVED, Stage.CLOSED, Stage.ACKED}),
    # IB reports an order we had finished ourselves: IB is the authority on what is at IB
    Stage.CLOSED: frozenset({Stage.ACKED}),
    Stage.ACKED: frozenset(),
}


class IllegalStageChange(RuntimeError):
    """A stage change not in :data:`STAGE_TRANSITIONS`: a bug in the order manager, never a market event."""


def check_stage_change(order_ref: str, current: str, new: str) -> None:
    """Raise :class:`IllegalStageChange` (logged as a bug) unless ``current -> new`` is in the table."""
    if new not in STAGE_TRANSITIONS.get(current, frozenset()):
        logger.critical("orders: {} illegal stage change {} -> {} refused (a bug)", order_ref, current, new)
        raise IllegalStageChange(f"{order_ref}: illegal stage change {current} -> {new}")
