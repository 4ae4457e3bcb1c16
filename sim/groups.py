"""Order groups: parent/child (brackets) and One-Cancels-All, as IB runs them.

* **Transmission.** An order placed with ``transmit=False`` is held in TWS:
  it gets a permId and is reported ``Inactive`` (IB's status for an order
  that exists but is not working), it never fills, and it can be modified or
  cancelled.  It is transmitted when an order of its group arrives with
  ``transmit=True``: itself again, its parent, or one of its children (the
  usual bracket: parent and take-profit held, the stop-loss transmits all
  three).
* **Brackets.** A child (``parentId``) waits ``PreSubmitted`` until its parent
  has filled; it works for the parent's filled quantity (after a partial
  fill of the parent, the children protect that part).  A child never
  outlives its bracket: a parent cancelled, rejected or expired takes its
  unfilled children with it.
* **OCA.** Orders sharing an ``ocaGroup`` (per client) react to each
  other's fills by ``ocaType``: 1 cancels every other member on any fill
  (partial included); 2 and 3 reduce the other members' quantities
  proportionally (a member reduced to nothing is cancelled).  Types 1 and 2
  are "with block" (overfill protected: a member's fill reduces the others
  before they can trade); type 3 is without block: members trading in the
  same market step all fill, and the reductions follow.  The children of one
  parent that name no OCA group form an implicit group of type
  ``BRACKET_OCA_TYPE`` (IB links bracket children), so a take-profit fill
  cancels the stop-loss and a partial one reduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .orders import FILL_EPSILON, SimOrder

#: ocaType IB applies when a group is named with ocaType 0.
DEFAULT_OCA_TYPE = 1
#: The implicit OCA group of a bracket's children reduces with block.
BRACKET_OCA_TYPE = 2
CANCEL_ON_FILL = 1
REDUCE_WITH_BLOCK = 2
REDUCE_WITHOUT_BLOCK = 3


@dataclass(frozen=True)
class OcaEffect:
    """What a member's fill does to one other member: cancel it, or cut its quantity to ``quantity``."""

    order: SimOrder
    action: str  # "cancel" | "reduce"
    quantity: float = 0.0


class OrderGroups:
    """Parent/child links and OCA membership over the broker's orders (see module docstring)."""

    def __init__(self, orders: dict[int, SimOrder], by_key: dict[tuple[int, int], int]) -> None:
        self._orders = orders
        self._by_key = by_key
        #: (client id, parent order id) -> child permIds
        self._children: dict[tuple[int, int], list[int]] = {}
        #: (client id, OCA group) -> member permIds
        self._oca: dict[tuple[int, str], list[int]] = {}

    def link(self, order: SimOrder) -> None:
        if order.parent_id:
            self._children.setdefault((order.client_id, order.parent_id), []).append(order.perm_id)
        if order.oca_group:
            self._oca.setdefault((order.client_id, order.oca_group), []).append(order.perm_id)

    def parent(self, order: SimOrder) -> SimOrder | None:
        if not order.parent_id:
            return None
        perm = self._by_key.get((order.client_id, order.parent_id))
        return self._orders.get(perm) if perm is not None else None

    def children(self, order: SimOrder) -> list[SimOrder]:
        if order.manual and not order.order_id:
            return []
        perms = self._children.get((order.client_id, order.order_id), ())
        return [self._orders[p] for p in sorted(perms) if p != order.perm_id]

    def transmission(self, order: SimOrder) -> list[SimOrder]:
        """The held orders that go out when ``order`` arrives with transmit=True (root first)."""
        root = self.parent(order) or order
        group = [root, *self.children(root)]
        if order not in group:
            group.append(order)
        return [o for o in group if o.held or o is order and not o.transmitted]

    # -- OCA ---------------------------------------------------------------------

    def oca_members(self, order: SimOrder) -> tuple[list[SimOrder], int]:
        """The other open members of ``order``'s OCA group and the group's ocaType."""
        if order.oca_group:
            perms = self._oca.get((order.client_id, order.oca_group), ())
            others = [self._orders[p] for p in sorted(perms) if p != order.perm_id]
            return [o for o in others if o.is_open], order.oca_type or DEFAULT_OCA_TYPE
        parent = self.parent(order)
        if parent is None:
            return [], 0
        siblings = [c for c in self.children(parent) if c is not order and not c.oca_group and c.is_open]
        return siblings, BRACKET_OCA_TYPE

    def child_cap(self, order: SimOrder) -> float | None:
        """How much a bracket child may fill now: the parent's filled part not yet closed out (None: no parent)."""
        parent = self.parent(order)
        if parent is None:
            return None
        members, _ = self.oca_members(order)
        closed = order.filled + sum(m.filled for m in members if m.parent_id == order.parent_id)
        return max(0.0, parent.filled - closed)

    def on_fill(self, order: SimOrder, quantity: float) -> tuple[int, list[OcaEffect]]:
        """What a fill of ``quantity`` of ``order`` does to the rest of its OCA group."""
        members, oca_type = self.oca_members(order)
        if not members:
            return 0, []
        if oca_type == CANCEL_ON_FILL:
            return oca_type, [OcaEffect(m, "cancel") for m in members]
        effects = []
        base = order.original_quantity or order.total_quantity
        for m in members:
            cut = quantity * (m.original_quantity or m.total_quantity) / base
            new_total = m.total_quantity - cut
            if not m.instrument.fractional:
                new_total = math.floor(new_total + 0.5)
            if new_total <= m.filled + FILL_EPSILON:
                effects.append(OcaEffect(m, "cancel", max(new_total, m.filled)))
            else:
                effects.append(OcaEffect(m, "reduce", new_total))
        return oca_type, effects
