"""The order manager (``python -m actors.orders``): journals, tracks and reconciles every order of every strategy.

Modules: :mod:`~actors.orders.stages` (pipeline stages and their transition table), :mod:`~actors.orders.lifecycle`
(IB statuses' transition table, one order's state: ``ManagedOrder``), :mod:`~actors.orders.journal` (SQLite WAL
journal), :mod:`~actors.orders.ledger` (orders in memory, journalled and published at every change:
``OrderLedger``), :mod:`~actors.orders.pipeline` (placing an order, stage by stage), :mod:`~actors.orders.cancel`
and :mod:`~actors.orders.amend` (cancelling and modifying), :mod:`~actors.orders.reconcile` (recovery against the
gateway's snapshot), :mod:`~actors.orders.peers` (calls to risk and the gateway), :mod:`~actors.orders.inflight`
(what is being done to which order), :mod:`~actors.orders.auth` (who may act for which strategy),
:mod:`~actors.orders.actor` (the actor). The lifecycle is described in ``docs/orders.md``.
"""

from actors.orders.actor import OrderManager
from actors.orders.journal import Journal
from actors.orders.lifecycle import TRANSITIONS, ManagedOrder, is_legal
from actors.orders.stages import STAGE_TRANSITIONS, Stage

__all__ = ["OrderManager", "Journal", "TRANSITIONS", "ManagedOrder", "is_legal", "STAGE_TRANSITIONS", "Stage"]
