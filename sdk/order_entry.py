"""The strategy client's order entry (:class:`OrderEntry`, a collaborator of
:class:`~sdk.async_client.AsyncKhazadClient`): place, modify and cancel single orders at the order manager.

Every order is validated against the schema before it is sent (a bad field raises ``ValueError`` naming it); a
refused one raises :class:`~sdk.errors.OrderRejected`. Resending a ``client_order_id`` is idempotent: the order
manager answers with the order it already has.
"""

from __future__ import annotations

from loguru import logger

from bus.messages import (
    Ack,
    CancelAllOrders,
    CancelOrder,
    CancelReport,
    Instrument,
    ModifyOrder,
    OrderListReply,
    OrderReply,
    OrderSpec,
    OrderView,
    PlaceOrder,
)
from sdk.endpoints import instrument as as_instrument
from sdk.endpoints import validated
from sdk.groups import trailing_stop_spec
from sdk.ids import new_client_order_id
from sdk.session import BusSession
from sdk.views import raise_if_rejected


class OrderEntry:
    """Single orders of one strategy: build, place, modify, cancel (see module docstring)."""

    def __init__(self, session: BusSession) -> None:
        self.session = session
        self.strategy_id = session.strategy_id

    async def place_order(self, order: OrderSpec) -> OrderView:
        """Send one fully specified order of this strategy; raise when it is refused."""
        if order.strategy_id != self.strategy_id:
            raise ValueError(f"order is for strategy {order.strategy_id!r}, this client is {self.strategy_id!r}")
        order = validated(order)
        s = self.session
        reply = await s.call(s.orders, PlaceOrder(order=order), OrderReply)
        view = reply.order
        if reply.duplicate:
            logger.info("sdk: order {} already known (idempotent resend), status {}", order.order_ref, view.status)
        else:
            logger.debug(
                "sdk: placed {} {} {:g} {} ({}): {}",
                order.order_ref,
                order.side,
                order.quantity,
                order.instrument.symbol,
                order.order_type,
                view.status,
            )
        raise_if_rejected(view)
        return view

    async def place(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        order_type: str,
        *,
        client_order_id: str | None,
        tif: str,
        limit_price: float | None = None,
        stop_price: float | None = None,
        outside_rth: bool = False,
        round_to_tick: bool = False,
    ) -> OrderView:
        """An order of this strategy from the caller's strings (a fresh client order id unless one is given),
        placed."""
        # side, order_type and tif are the caller's strings (the ignores below): place_order() validates the spec
        # against the Literal types before anything is sent, and a bad one raises there naming the field
        spec = OrderSpec(
            strategy_id=self.strategy_id,
            client_order_id=client_order_id or new_client_order_id(self.strategy_id),
            instrument=as_instrument(symbol),
            side=side.upper(),  # type: ignore[arg-type]
            quantity=quantity,
            order_type=order_type,  # type: ignore[arg-type]
            limit_price=limit_price,
            stop_price=stop_price,
            tif=tif,  # type: ignore[arg-type]
            outside_rth=outside_rth,
            round_to_tick=round_to_tick,
        )
        return await self.place_order(spec)

    async def place_trailing_stop(
        self,
        symbol: str | Instrument,
        side: str,
        quantity: float,
        *,
        trailing_amount: float | None,
        trailing_percent: float | None,
        trail_stop_price: float | None,
        limit_offset: float | None,
        client_order_id: str | None,
        tif: str,
        outside_rth: bool,
    ) -> OrderView:
        """A TRAIL (TRAIL LIMIT with ``limit_offset``) order built by :func:`sdk.groups.trailing_stop_spec`."""
        spec = trailing_stop_spec(
            self.strategy_id,
            as_instrument(symbol),
            side,
            quantity,
            trailing_amount=trailing_amount,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            limit_offset=limit_offset,
            client_order_id=client_order_id,
            tif=tif,
            outside_rth=outside_rth,
        )
        return await self.place_order(spec)

    async def modify_order(
        self, client_order_id: str, *, quantity: float | None, limit_price: float | None, stop_price: float | None
    ) -> OrderView:
        """Change quantity and/or prices of a working order."""
        body = validated(
            ModifyOrder(
                strategy_id=self.strategy_id,
                client_order_id=client_order_id,
                quantity=quantity,
                limit_price=limit_price,
                stop_price=stop_price,
            )
        )
        s = self.session
        reply = await s.call(s.orders, body, OrderReply)
        return reply.order

    async def cancel_order(self, client_order_id: str, *, reason: str) -> OrderView:
        """Ask for one order's cancellation; the view at the time of the request."""
        body = validated(CancelOrder(strategy_id=self.strategy_id, client_order_id=client_order_id, reason=reason))
        s = self.session
        reply = await s.call(s.orders, body, OrderReply)
        return reply.order

    async def cancel_all_orders(self, symbol: str | None, *, reason: str) -> list[OrderView]:
        """Cancel every working order of this strategy (optionally one symbol); the orders the cancel was sent for."""
        body = validated(CancelAllOrders(strategy_id=self.strategy_id, symbol=symbol, reason=reason))
        s = self.session
        reply = await s.call(s.orders, body, (OrderListReply, Ack, CancelReport))
        return list(reply.orders) if isinstance(reply, OrderListReply) else []
