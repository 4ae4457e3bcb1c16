"""The strategy client's order groups at the order manager (:class:`GroupEntry`, a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient`): place a bracket or an OCA group, look one up, cancel it.

:mod:`sdk.groups` builds the groups; a group is approved as a whole or refused as a whole (one
:class:`~sdk.errors.OrderRejected` carrying the group's view).
"""

from __future__ import annotations

from collections.abc import Sequence

from loguru import logger

from bus.messages import CancelGroup, GetGroup, GroupReply, GroupView, Instrument, OrderGroup, OrderSpec, PlaceGroup
from sdk.endpoints import instrument as as_instrument
from sdk.endpoints import validated
from sdk.groups import bracket_group, oca_group, raise_if_group_rejected
from sdk.session import BusSession


class GroupEntry:
    """Order groups of one strategy: place, look up, cancel (see module docstring)."""

    def __init__(self, session: BusSession) -> None:
        self.session = session
        self.strategy_id = session.strategy_id

    async def place_group(self, group: OrderGroup) -> GroupView:
        """Send one group of this strategy; every member's view, or OrderRejected for the whole group."""
        if group.strategy_id != self.strategy_id:
            raise ValueError(f"group is for strategy {group.strategy_id!r}, this client is {self.strategy_id!r}")
        s = self.session
        reply = await s.call(s.orders, PlaceGroup(group=validated(group)), GroupReply)
        view = reply.group
        logger.debug("sdk: group {} ({}) placed: {}", group.key, group.kind, view.status)
        raise_if_group_rejected(view)
        return view

    async def place_bracket_order(
        self,
        instrument: str | Instrument,
        side: str,
        quantity: float,
        entry_price: float | None,
        take_profit: float | None,
        stop_loss: float | None,
        *,
        group_id: str | None,
        tif: str,
        children_tif: str,
        outside_rth: bool,
        round_to_tick: bool,
    ) -> GroupView:
        """Entry, take-profit and stop-loss as one bracket (:func:`sdk.groups.bracket_group`)."""
        group = bracket_group(
            self.strategy_id,
            as_instrument(instrument),
            side,
            quantity,
            entry_price,
            take_profit,
            stop_loss,
            group_id=group_id,
            tif=tif,
            children_tif=children_tif,
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )
        return await self.place_group(group)

    async def place_oca_group(self, orders: Sequence[OrderSpec], *, oca_type: int, group_id: str | None) -> GroupView:
        """``orders`` as one OCA group (:func:`sdk.groups.oca_group`)."""
        return await self.place_group(oca_group(self.strategy_id, orders, oca_type=oca_type, group_id=group_id))

    async def get_group(self, group_id: str) -> GroupView:
        """The order manager's view of one of this strategy's groups."""
        body = validated(GetGroup(strategy_id=self.strategy_id, group_id=group_id))
        s = self.session
        return (await s.call(s.orders, body, GroupReply)).group

    async def cancel_group(self, group_id: str, *, reason: str) -> GroupView:
        """Cancel every working member; the view at the request."""
        body = validated(CancelGroup(strategy_id=self.strategy_id, group_id=group_id, reason=reason))
        s = self.session
        return (await s.call(s.orders, body, GroupReply)).group
