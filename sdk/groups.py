"""Order groups and protective orders for strategies: builders for brackets, OCA groups and trailing stops, and
what the SDK reads from a :class:`~bus.messages.GroupView`.

A bracket is an entry and its protection, placed as one unit and held at IB: the take-profit (a limit) and the
stop-loss (a stop) work once the entry fills, for what it filled, and one cancels the other. An OCA group is any
set of orders of which the first fill cancels (``oca_type=1``) or reduces (2, 3) the others. Risk approves a group
as a whole (all members or none) on its worst case; every member is an ordinary order as well (``get_order`` with
its ``client_order_id``; its orderRef ``<strategy>/<client_order_id>``). See docs/sdk.md, "Order groups".
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from bus.messages import GroupView, Instrument, OrderGroup, OrderSpec
from sdk.errors import OrderRejected
from sdk.ids import new_client_order_id


def bracket_group(
    strategy_id: str,
    instrument: Instrument,
    side: str,
    quantity: float,
    entry_price: float | None,
    take_profit: float | None,
    stop_loss: float | None,
    *,
    group_id: str | None = None,
    tif: str = "DAY",
    children_tif: str = "GTC",
    outside_rth: bool = False,
    round_to_tick: bool = False,
) -> OrderGroup:
    """An entry (LMT at ``entry_price``; MKT when None), a take-profit LMT and a stop-loss STP on the other side for
    the same quantity (either may be None: a two-order bracket). The children default to GTC: protection that
    outlives the day and this process."""
    gid = group_id or new_client_order_id(strategy_id)
    exit_side = "SELL" if side.upper() == "BUY" else "BUY"
    common = dict(
        strategy_id=strategy_id,
        instrument=instrument,
        quantity=quantity,
        group_id=gid,
        outside_rth=outside_rth,
        round_to_tick=round_to_tick,
    )
    entry = msgspec.convert(
        dict(
            common,
            client_order_id=new_client_order_id(strategy_id),
            side=side.upper(),
            order_type="MKT" if entry_price is None else "LMT",
            limit_price=entry_price,
            tif=tif,
        ),
        OrderSpec,
    )
    children = []
    if take_profit is not None:
        children.append(
            dict(
                common,
                client_order_id=new_client_order_id(strategy_id),
                side=exit_side,
                order_type="LMT",
                limit_price=take_profit,
                tif=children_tif,
                parent_id=entry.client_order_id,
            )
        )
    if stop_loss is not None:
        children.append(
            dict(
                common,
                client_order_id=new_client_order_id(strategy_id),
                side=exit_side,
                order_type="STP",
                stop_price=stop_loss,
                tif=children_tif,
                parent_id=entry.client_order_id,
            )
        )
    if not children:
        raise ValueError("a bracket needs a take_profit, a stop_loss, or both")
    members = [entry, *(msgspec.convert(c, OrderSpec) for c in children)]
    return OrderGroup(strategy_id=strategy_id, group_id=gid, kind="bracket", orders=members)


def oca_group(
    strategy_id: str, orders: Sequence[OrderSpec], *, oca_type: int = 1, group_id: str | None = None
) -> OrderGroup:
    """The orders as one OCA group (each gets the group's id and ``oca_type``; give each its own client id)."""
    gid = group_id or new_client_order_id(strategy_id)
    members = [msgspec.structs.replace(o, group_id=gid, oca_type=oca_type, parent_id="") for o in orders]
    return OrderGroup(strategy_id=strategy_id, group_id=gid, kind="oca", orders=members, oca_type=oca_type)


def trailing_stop_spec(
    strategy_id: str,
    instrument: Instrument,
    side: str,
    quantity: float,
    *,
    trailing_amount: float | None = None,
    trailing_percent: float | None = None,
    trail_stop_price: float | None = None,
    limit_offset: float | None = None,
    client_order_id: str | None = None,
    tif: str = "GTC",
    outside_rth: bool = False,
) -> OrderSpec:
    """A TRAIL order (a TRAIL LIMIT with ``limit_offset``): the stop follows the market by ``trailing_amount`` or
    ``trailing_percent`` and never moves back."""
    return msgspec.convert(
        dict(
            strategy_id=strategy_id,
            client_order_id=client_order_id or new_client_order_id(strategy_id),
            instrument=instrument,
            side=side.upper(),
            quantity=quantity,
            order_type="TRAIL" if limit_offset is None else "TRAIL LIMIT",
            trailing_amount=trailing_amount,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            limit_offset=limit_offset,
            tif=tif,
            outside_rth=outside_rth,
        ),
        OrderSpec,
    )


def raise_if_group_rejected(view: GroupView) -> None:
    """A group risk or the gateway refused as a whole is an error for the caller (the view is on the error)."""
    if view.status != "rejected":
        return
    reason = view.reason or "group rejected"
    prefix, sep, rest = reason.partition(":")
    code = prefix.strip() if sep and prefix and " " not in prefix.strip() else "group_rejected"
    raise OrderRejected(
        code, rest.strip() if code != "group_rejected" else reason, request_type="place_group", group=view
    )


def member(view: GroupView, client_order_id: str) -> OrderSpec:
    """The spec of one member of a group view."""
    for o in view.orders:
        if o.spec.client_order_id == client_order_id:
            return o.spec
    raise KeyError(client_order_id)
