"""``CheckGroup``: an order group (bracket or OCA) approved as one unit, all members or none, on its worst case.

Every member passes the same checks as a single order (:mod:`actors.risk.checks`), each against the world as it
would be when that member can trade:

* **bracket**: the entry against the books as they are; each child (take-profit, stop-loss) against the books
  *after the entry has filled* (a child works only then, and only for what the entry filled): so a child reduces
  that position, and the group's exposure is the entry's, not three orders' (a REDUCING scope admits the
  children exactly when it admits the entry);
* **OCA**: every member against the books as they are, without its siblings (at most one fills in full): the
  group's worst case is its largest member, not the sum. Protective members that only reduce a position pass a
  REDUCING scope.

IB's what-if margin check (``risk.margin``, when configured) previews a bracket's entry and every OCA member, each
as a single order would be.

If any member fails, the group is refused as a whole (``code`` and ``reason`` of the first failure, and the
member's orderRef). If all pass, each member gets its own approval (bound to that member: its ``parent_id``,
``group_id`` and ``oca_type`` are signed), one order-rate token is taken for the group, and every member is
reserved in the exposure book as one one-cancels-all set: only its largest member counts (a bracket's children
form a set of their own and add no notional). Nothing awaits between the first view and the reservations, as in
:mod:`actors.risk.pretrade`.
"""

from __future__ import annotations

import dataclasses
import time

from loguru import logger

from actors.risk import codes
from actors.risk.checks import BookView, RiskView, Verdict, evaluate, prices
from actors.risk.mirror import GatewayMirror
from actors.risk.pretrade import ApprovalSigner, PreTradeChecker
from actors.risk.working import BRACKET_PREFIX, OCA_PREFIX
from bus.config import RiskConfig, RiskLimits
from bus.messages import CheckGroup, ContractInfo, GroupDecision, OrderGroup, OrderSpec, TradingState, oca_key


def after_fill(view: RiskView, entry: OrderSpec) -> RiskView:
    """The view a bracket child is checked against: both books as if the entry had filled in full."""

    def moved(book: BookView) -> BookView:
        return dataclasses.replace(book, position=book.position + entry.signed_quantity)

    return dataclasses.replace(view, strategy=moved(view.strategy), account=moved(view.account), duplicate_of=None)


class GroupChecker:
    """Answers ``CheckGroup`` (see the module docstring) with the single-order checker's preparation and views."""

    def __init__(
        self, risk: RiskConfig, pretrade: PreTradeChecker, gateway: GatewayMirror, signer: ApprovalSigner
    ) -> None:
        self._risk = risk
        self._pretrade = pretrade
        self._gateway = gateway
        self._signer = signer

    async def check(self, req: CheckGroup) -> GroupDecision:
        t0 = time.perf_counter_ns()
        group = req.group
        infos: list[ContractInfo] = []
        for order in group.orders:
            verdict, info = await self._pretrade.prepare(order)
            if verdict.approved and info is None:  # prepare found no contract: the full checks say why
                verdict = evaluate(order, self._pretrade.view(order, None, time.monotonic()), *self._limits(order))
            if not verdict.approved or info is None:
                return self._refuse(group, order, verdict, info, t0)
            infos.append(info)
        entry = group.orders[0]
        # IB's what-if margin check: a bracket's entry (its children only close what it opens), every OCA member
        margins = [
            await self._pretrade.margin(order, info) if group.kind == "oca" or order is entry else None
            for order, info in zip(group.orders, infos, strict=True)
        ]
        # from here to the end nothing awaits: the views and the reservations are one atomic step
        now = time.monotonic()
        views: list[RiskView] = []
        for order, info, margin in zip(group.orders, infos, margins, strict=True):
            view = self._pretrade.with_margin(self._pretrade.view(order, info, now), margin)
            if group.kind == "bracket" and order is not entry:
                view = after_fill(view, entry)
            verdict = evaluate(order, view, *self._limits(order))
            if not verdict.approved:
                return self._refuse(group, order, verdict, info, t0)
            views.append(view)
        approvals = [self._signer.sign(order, is_modify=False) for order in group.orders]
        sid = group.strategy_id
        self._pretrade.rate.take(sid, self._limits(entry)[0].max_orders_per_second, now)
        oca = f"{OCA_PREFIX}{oca_key(group.key)}" if group.kind == "oca" else f"{BRACKET_PREFIX}{entry.order_ref}"
        for order, info, view in zip(group.orders, infos, views, strict=True):
            limits = self._limits(order)[0]
            self._pretrade.duplicates.record(order, limits.duplicate_window_s, now)
            limit, stop = prices(order, view)
            is_child = group.kind == "bracket" and order is not entry
            self._gateway.book.add_pending(
                order,
                info,
                price=limit if limit is not None else stop,
                expires_mono=now + self._risk.pending_order_ttl_s,
                oca=oca if group.kind == "oca" or is_child else "",
                child=is_child,
                market_price=view.ref_price,
            )
        elapsed = time.perf_counter_ns() - t0
        for order in group.orders:
            self._pretrade.after_decision(order, Verdict(codes.APPROVED, f"group {group.key}"), elapsed)
        logger.info("risk: APPROVED group {} ({}, {} members)", group.key, group.kind, len(group.orders))
        state: TradingState = self._pretrade.effective_state(entry, infos[0])
        return GroupDecision(
            approved=True, code=codes.APPROVED, reason="approved", approvals=approvals, trading_state=state
        )

    def _limits(self, order: OrderSpec) -> tuple[RiskLimits, RiskLimits]:
        table = self._pretrade.limits
        return table.for_strategy(order.strategy_id), table.account

    def _refuse(
        self, group: OrderGroup, order: OrderSpec, verdict: Verdict, info: ContractInfo | None, t0: int
    ) -> GroupDecision:
        elapsed = time.perf_counter_ns() - t0
        for member in group.orders:
            mine = verdict if member is order else Verdict(codes.GROUP_REJECTED, f"{order.order_ref}: {verdict.code}")
            self._pretrade.after_decision(member, mine, elapsed)
        logger.info("risk: REJECTED group {}: {} {}: {}", group.key, order.order_ref, verdict.code, verdict.reason)
        state: TradingState = self._pretrade.effective_state(order, info)
        return GroupDecision(
            approved=False,
            code=verdict.code,
            reason=f"{order.order_ref}: {verdict.reason}",
            order_ref=order.order_ref,
            trading_state=state,
        )
