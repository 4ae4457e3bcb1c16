"""The strategy client's questions to the portfolio and its service pings (:class:`AccountQueries`, a collaborator
of :class:`~sdk.async_client.AsyncKhazadClient`)."""

from __future__ import annotations

from typing import Literal

from bus.messages import AccountReply, GetAccount, GetPositions, Ping, Pong, PortfolioSnapshot, Position, PositionsReply
from sdk.endpoints import validated
from sdk.session import BusSession

Service = Literal["orders", "portfolio", "gateway"]


class AccountQueries:
    """Positions and the account from the portfolio; a round trip to a service (see module docstring)."""

    def __init__(self, session: BusSession) -> None:
        self.session = session

    async def get_positions(self, strategy_id: str | None) -> list[Position]:
        """The whole account's positions (None) or one strategy's."""
        body = validated(GetPositions(strategy_id=strategy_id))
        reply = await self.session.call(self.session.portfolio, body, PositionsReply)
        return list(reply.positions)

    async def get_account(self) -> PortfolioSnapshot:
        """Account summary, positions and per-strategy P&L."""
        reply = await self.session.call(self.session.portfolio, GetAccount(), AccountReply)
        return reply.snapshot

    async def ping(self, service: Service) -> str:
        """A service's lifecycle state (RequestTimeout when it is down)."""
        s = self.session
        cl = {"orders": s.orders, "portfolio": s.portfolio, "gateway": s.gateway}[service]
        reply = await s.call(cl, Ping(), Pong)
        return reply.state
