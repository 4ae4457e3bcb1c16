"""The order manager (``python -m actors.orders``): journals, tracks and reconciles every order of every strategy.

Modules: :mod:`~actors.orders.lifecycle` (transition table, one order's state), :mod:`~actors.orders.journal`
(SQLite WAL journal), :mod:`~actors.orders.book` (orders in memory, journalled and published at every change),
:mod:`~actors.orders.reconcile` (recovery against the gateway's snapshot), :mod:`~actors.orders.auth` (who may act
for which strategy), :mod:`~actors.orders.actor` (the actor). The lifecycle is described in ``docs/orders.md``.
"""

from actors.orders.actor import OrderManager
from actors.orders.journal import Journal
from actors.orders.lifecycle import TRANSITIONS, OrderRecord, Stage, is_legal

__all__ = ["OrderManager", "Journal", "TRANSITIONS", "OrderRecord", "Stage", "is_legal"]
